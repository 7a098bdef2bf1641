package reload

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/lbctl/lbctl/internal/atomicfile"
	"github.com/lbctl/lbctl/render"
)

// prior is a live file's content before a swap, to put back.
type prior struct {
	path   string
	data   []byte
	perm   fs.FileMode
	absent bool
}

// changedFiles returns the files whose bytes differ from the live file, and
// what each live file held.
func changedFiles(files []render.File) ([]render.File, []prior, error) {
	var changed []render.File
	var previous []prior
	for _, f := range files {
		live, err := os.ReadFile(f.Path)
		absent := errors.Is(err, fs.ErrNotExist)
		if err != nil && !absent {
			return nil, nil, fmt.Errorf("read live %s: %w", f.Path, err)
		}
		if !absent && bytes.Equal(live, f.Data) {
			continue
		}
		perm := f.Perms
		if fi, err := os.Stat(f.Path); err == nil {
			perm = fi.Mode().Perm()
		}
		changed = append(changed, f)
		previous = append(previous, prior{path: f.Path, data: live, perm: perm, absent: absent})
	}
	return changed, previous, nil
}

func swap(files []render.File) error {
	for _, f := range files {
		perm := f.Perms
		if perm == 0 {
			perm = 0o644
		}
		if err := atomicfile.Replace(f.Path, f.Data, perm); err != nil {
			return fmt.Errorf("swap in %s (from %s): %w", f.Path, f.Source, err)
		}
	}
	return nil
}

// restore puts back what the live files held before a swap.
func restore(previous []prior) error {
	var errs []error
	for _, p := range previous {
		var err error
		if p.absent {
			err = os.Remove(p.path)
			if errors.Is(err, fs.ErrNotExist) {
				err = nil
			}
		} else {
			err = atomicfile.Replace(p.path, p.data, p.perm)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("restore %s: %w", p.path, err))
		}
	}
	return errors.Join(errs...)
}
