package reload

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/lbctl/lbctl/render"
)

// A file a read found unchanged is known while its stat stays; an edit
// behind lbctl's back, in place or by a rename over it, is seen.
func TestKnownFilesSeeAnEditBehindLbctl(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lbctl.conf")
	f := render.File{Path: path, Data: []byte("upstream a {}\n"), Perms: 0o644}
	k := knownFiles{}
	isChanged := func(want bool) {
		t.Helper()
		changed, _, err := k.changed([]render.File{f})
		if err != nil {
			t.Fatal(err)
		}
		if got := len(changed) == 1; got != want {
			t.Fatalf("changed: %v, want %v", got, want)
		}
	}
	write := func(data string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	isChanged(true) // absent
	write(string(f.Data))
	isChanged(false)
	if _, ok := k[path]; !ok {
		t.Fatal("a file read and found unchanged is not known")
	}
	isChanged(false)         // known, unread
	write("upstream b {}\n") // the same size, in place
	// Kernels before 6.13 stamp files with a coarse clock (a few ms), so a
	// write this soon after the stat could keep its mtime there: an edit by
	// hand comes later than that.
	later := time.Now().Add(time.Second)
	if err := os.Chtimes(path, later, later); err != nil {
		t.Fatal(err)
	}
	isChanged(true)
	write(string(f.Data))
	isChanged(false)
	other := path + ".new"
	if err := os.WriteFile(other, []byte("upstream c {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(other, path); err != nil {
		t.Fatal(err)
	}
	isChanged(true)
	if _, ok := k[path]; ok {
		t.Fatal("a changed file is still known")
	}
}
