package accesslog

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/lbctl/lbctl/internal/testrig"
)

type lines struct {
	mu  sync.Mutex
	got []string
}

func (l *lines) add(b []byte) { l.mu.Lock(); l.got = append(l.got, string(b)); l.mu.Unlock() }
func (l *lines) reset()       { l.mu.Lock(); l.got = nil; l.mu.Unlock() }
func (l *lines) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.got)
}

func appendTo(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.WriteString(s)
}

func TestTailerFollowsAppendsRotationAndTruncation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.log")
	appendTo(t, path, "old line\n")
	ctx, cancel := context.WithCancel(context.Background())
	var got lines
	done := make(chan error)
	tl := &Tailer{Path: path, Poll: 5 * time.Millisecond}
	go func() { done <- tl.Run(ctx, got.add) }()
	want := func(w ...string) {
		t.Helper()
		testrig.WaitFor(t, 5*time.Second, "lines", func() error {
			g := got.all()
			for len(g) > 0 && (g[0] == "x" || g[0] == "mark") {
				g = g[1:]
			}
			if !slices.Equal(g, w) {
				return errorf("got %q", g)
			}
			return nil
		})
	}
	// Lines already in the file are not this run's: mark until one shows up.
	testrig.WaitFor(t, 5*time.Second, "a line written after start", func() error {
		appendTo(t, path, "mark\n")
		if len(got.all()) == 0 {
			return errorf("nothing yet")
		}
		return nil
	})
	for _, l := range got.all() {
		if l != "mark" {
			t.Fatalf("read %q from before the start", l)
		}
	}
	os.Truncate(path, 0)
	testrig.WaitFor(t, 5*time.Second, "truncation seen", func() error {
		appendTo(t, path, "x\n")
		if g := got.all(); g[len(g)-1] != "x" {
			return errorf("not yet")
		}
		return nil
	})
	os.Remove(path)
	appendTo(t, path, "one\ntw")
	want("one")
	appendTo(t, path, "o\n")
	want("one", "two")
	os.Rename(path, path+".1")
	appendTo(t, path, "three\n")
	want("one", "two", "three")
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

var errorf = fmt.Errorf
