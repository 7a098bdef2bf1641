package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteOnlyWhenBytesChange(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lbctl.conf")
	for i, step := range []struct {
		data        string
		wantChanged bool
	}{{"a", true}, {"a", false}, {"b", true}} {
		changed, err := Write(path, []byte(step.data), 0o640)
		if err != nil {
			t.Fatal(err)
		}
		if changed != step.wantChanged {
			t.Fatalf("step %d: changed = %v, want %v", i, changed, step.wantChanged)
		}
	}
	got, _ := os.ReadFile(path)
	fi, _ := os.Stat(path)
	if string(got) != "b" || fi.Mode().Perm() != 0o640 {
		t.Fatalf("file = %q mode %v, want \"b\" 0640", got, fi.Mode().Perm())
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".lbctl.conf.lbctl-*")); len(left) != 0 {
		t.Fatalf("temp files left behind: %v", left)
	}
}

func TestWriteIntoMissingDirFails(t *testing.T) {
	if _, err := Write(filepath.Join(t.TempDir(), "no", "such", "dir", "f"), []byte("x"), 0o644); err == nil {
		t.Fatal("want an error for a missing directory")
	}
}
