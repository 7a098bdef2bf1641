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

func TestRemoveStaleRemovesOnlyLbctlTempFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "lbctl.conf")
	ours := []string{}
	for _, kind := range []string{"", "check"} {
		f, err := CreateTemp(path, kind)
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
		ours = append(ours, f.Name())
	}
	others := []string{
		"lbctl.conf", ".lbctl.conf.lbctl-", ".lbctl.conf.lbctl-12x", "lbctl.conf.lbctl-123", ".other.conf.lbctl-123",
		".lbctl.conf.lbctl-123.bak", ".lbctl.confX.lbctl-123", ".lbctl.conf.swp",
	}
	for _, name := range others {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, ".lbctl.conf.lbctl-999"), 0o755); err != nil {
		t.Fatal(err)
	}
	others = append(others, ".lbctl.conf.lbctl-999")
	removed, err := RemoveStale(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != len(ours) {
		t.Fatalf("removed %v, want %v", removed, ours)
	}
	for _, p := range ours {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s still there (%v)", p, err)
		}
	}
	for _, name := range others {
		if _, err := os.Lstat(filepath.Join(dir, name)); err != nil {
			t.Errorf("%s is not lbctl's temp file but was touched: %v", name, err)
		}
	}
	if removed, err := RemoveStale(filepath.Join(dir, "missing-dir", "f")); err != nil || len(removed) != 0 {
		t.Fatalf("missing directory: %v, %v", removed, err)
	}
}

// ReplaceVolatile differs from Replace only in skipping the fsyncs: the same
// bytes, mode and clean directory, over an existing file or none.
func TestReplaceVolatileReplacesLikeReplace(t *testing.T) {
	for name, replace := range map[string]func(string, []byte, os.FileMode) error{"Replace": Replace, "ReplaceVolatile": ReplaceVolatile} {
		dir := t.TempDir()
		path := filepath.Join(dir, "live.json")
		for _, data := range []string{"old", "new"} {
			if err := replace(path, []byte(data), 0o600); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
		}
		got, _ := os.ReadFile(path)
		fi, _ := os.Stat(path)
		if string(got) != "new" || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: file = %q mode %v, want \"new\" 0600", name, got, fi.Mode().Perm())
		}
		if left, _ := filepath.Glob(filepath.Join(dir, ".live.json.lbctl-*")); len(left) != 0 {
			t.Errorf("%s: temp files left behind: %v", name, left)
		}
		if err := replace(filepath.Join(dir, "no", "dir", "f"), []byte("x"), 0o600); err == nil {
			t.Errorf("%s: want an error for a missing directory", name)
		}
	}
}
