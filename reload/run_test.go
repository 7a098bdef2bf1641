package reload

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/lbctl/lbctl/config"
	"github.com/lbctl/lbctl/internal/testrig"
	"github.com/lbctl/lbctl/render"
)

// fakeClock fires After channels only when the test advances it.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []fakeWaiter
}

type fakeWaiter struct {
	at time.Time
	ch chan time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	c.waiters = append(c.waiters, fakeWaiter{at: c.now.Add(d), ch: ch})
	return ch
}

// hasWaiter reports whether someone waits for exactly at.
func (c *fakeClock) hasWaiter(at time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, w := range c.waiters {
		if w.at.Equal(at) {
			return true
		}
	}
	return false
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if w.at.After(c.now) {
			kept = append(kept, w)
			continue
		}
		w.ch <- c.now
	}
	c.waiters = kept
}

// Run with a fake clock: updates inside wait.min fold into one apply, which
// happens only once the clock passes min after the last of them.
func TestRunFoldsUpdatesWithinMin(t *testing.T) {
	dest := filepath.Join(t.TempDir(), "lbctl.conf")
	if err := os.WriteFile(dest, []byte("# live\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{now: t0}
	applied := make(chan uint64, 10)
	ctl := New(Options{
		Nginx: config.Nginx{Binary: "nginx-is-not-needed", Config: dest}, Clock: clock,
		Wait:      config.Wait{Min: 20 * time.Millisecond, Max: time.Second},
		OnApplied: func(u render.Update) { applied <- u.Index },
	})
	updates := make(chan render.Update) // unbuffered: a send returns once Run has it
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ctl.Run(ctx, updates) }()
	defer func() { cancel(); <-done }()

	// Byte-equal to the live file: each apply is "unchanged" and reports its index.
	same := func(i uint64) render.Update {
		return render.Update{Index: i, Files: []render.File{{Path: dest, Data: []byte("# live\n"), Source: "builtin"}}}
	}
	for i := uint64(1); i <= 3; i++ {
		if i > 1 {
			clock.advance(5 * time.Millisecond)
		}
		updates <- same(i)
		due := clock.Now().Add(20 * time.Millisecond) // this update, plus min
		testrig.WaitFor(t, 5*time.Second, "Run to wait for the quiet period", func() error {
			if !clock.hasWaiter(due) {
				return errors.New("no timer for the quiet period yet")
			}
			return nil
		})
	}
	select {
	case i := <-applied:
		t.Fatalf("applied index %d before the quiet period ended", i)
	default:
	}
	clock.advance(20 * time.Millisecond)
	select {
	case i := <-applied:
		if i != 3 {
			t.Fatalf("applied index %d, want 3 (the newest)", i)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no apply after the quiet period")
	}
	select {
	case i := <-applied:
		t.Fatalf("a second apply (index %d) for one burst", i)
	default:
	}
}

func TestOnAppliedGetsTheAppliedUpdate(t *testing.T) {
	dest := filepath.Join(t.TempDir(), "lbctl.conf")
	if err := os.WriteFile(dest, []byte("# live\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got := make(chan render.Update, 1)
	ctl := New(Options{Nginx: config.Nginx{Config: dest}, OnApplied: func(u render.Update) { got <- u }})
	u := render.Update{Index: 7, Files: []render.File{{Path: dest, Data: []byte("# live\n")}}}
	if _, err := ctl.Apply(context.Background(), u); err != nil {
		t.Fatal(err)
	}
	if (<-got).Index != 7 {
		t.Fatal("OnApplied did not get the update")
	}
}
