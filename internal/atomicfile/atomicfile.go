// Package atomicfile replaces files so that a reader sees either the old bytes
// or the new ones, never a mix: temp file in the same directory, write, fsync,
// chmod, rename, fsync the directory. ReplaceVolatile leaves out the fsyncs,
// for files that only matter while the machine is up.
package atomicfile

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
)

// Write replaces path with data unless it already holds exactly those bytes.
// It reports whether it wrote.
func Write(path string, data []byte, perm fs.FileMode) (bool, error) {
	current, err := os.ReadFile(path)
	if err == nil && bytes.Equal(current, data) {
		return false, nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("read %s: %w", path, err)
	}
	return true, Replace(path, data, perm)
}

// Replace writes data to path atomically, whatever path held before, and
// durably: file and directory are fsynced before it returns.
func Replace(path string, data []byte, perm fs.FileMode) error {
	return replace(path, data, perm, true)
}

// ReplaceVolatile is Replace without the fsyncs. Readers still see the old
// bytes or the new, never a mix, but a crash of the machine (not of a
// process) may leave the old bytes, the new or an empty file. It is for
// files that only matter while the machine is up, where an fsync would put
// the disk's latency, milliseconds to tens of them under load, in a path
// that otherwise takes a fraction of one.
func ReplaceVolatile(path string, data []byte, perm fs.FileMode) error {
	return replace(path, data, perm, false)
}

func replace(path string, data []byte, perm fs.FileMode, durable bool) error {
	dir := filepath.Dir(path)
	tmp, err := CreateTemp(path, "")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if durable {
		if err := tmp.Sync(); err != nil {
			tmp.Close()
			return fmt.Errorf("sync %s: %w", path, err)
		}
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Chmod(tmp.Name(), perm); err != nil {
		return fmt.Errorf("chmod %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("replace %s: %w", path, err)
	}
	if !durable {
		return nil
	}
	return syncDir(dir)
}

// CreateTemp creates the hidden temp file lbctl writes before renaming it
// over path: ".BASE.lbctl-" then kind and "-" when kind is set, then the
// random digits os.CreateTemp adds, in path's directory. RemoveStale finds
// exactly these names.
func CreateTemp(path, kind string) (*os.File, error) {
	if kind != "" {
		kind += "-"
	}
	return os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".lbctl-"+kind+"*")
}

// tempName is CreateTemp's name for BASE: kind is lower-case letters, the
// suffix decimal digits (os.CreateTemp's).
func tempName(base string) *regexp.Regexp {
	return regexp.MustCompile(`^\.` + regexp.QuoteMeta(base) + `\.lbctl-([a-z]+-)?[0-9]+$`)
}

// RemoveStale removes the temp files CreateTemp made for path that are still
// there: a process killed between CreateTemp and the rename leaves them.
// Anything else in the directory is left alone, as are directories and
// symlinks. It returns the paths removed.
func RemoveStale(path string) ([]string, error) {
	dir, base := filepath.Dir(path), filepath.Base(path)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("remove stale temp files of %s: %w", path, err)
	}
	re := tempName(base)
	var removed []string
	var errs []error
	for _, e := range entries {
		if !e.Type().IsRegular() || !re.MatchString(e.Name()) {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove stale temp file %s: %w", p, err))
			continue
		}
		removed = append(removed, p)
	}
	return removed, errors.Join(errs...)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
