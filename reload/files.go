package reload

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

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

// knownFiles remembers, per path, the data a read found the live file to
// hold and the file's stat from just before that read. While the stat stays
// the same, the file is taken to hold that data unread: at 1,000 services
// every instance change read back a ~500 KB config that had not changed. An
// edit behind lbctl's back (a write in place, a file renamed over it)
// changes the stat (size, mtime, ctime or inode), and the file is read again.
type knownFiles map[string]knownFile

type knownFile struct {
	data  []byte
	stamp fileStamp
}

// fileStamp is what stat says of a file that an edit would change.
type fileStamp struct {
	dev, ino     uint64
	size         int64
	mtime, ctime syscall.Timespec
}

func stampOf(path string) (fileStamp, bool) {
	var st syscall.Stat_t
	if syscall.Stat(path, &st) != nil {
		return fileStamp{}, false
	}
	return fileStamp{dev: uint64(st.Dev), ino: st.Ino, size: st.Size, mtime: st.Mtim, ctime: st.Ctim}, true
}

// changed is changedFiles for the files not known to hold their data; it
// learns the ones a read finds unchanged.
func (k knownFiles) changed(files []render.File) ([]render.File, []prior, error) {
	var changed []render.File
	var previous []prior
	for _, f := range files {
		st, ok := stampOf(f.Path)
		if rec, known := k[f.Path]; ok && known && rec.stamp == st && bytes.Equal(rec.data, f.Data) {
			continue
		}
		delete(k, f.Path)
		c, p, err := changedFiles([]render.File{f})
		if err != nil {
			return nil, nil, err
		}
		if len(c) == 0 && ok {
			k[f.Path] = knownFile{data: f.Data, stamp: st}
		}
		changed, previous = append(changed, c...), append(previous, p...)
	}
	return changed, previous, nil
}

// staged is a candidate written and fsynced next to its destination, so
// that swapping it in is one rename.
type staged struct {
	tmp, path string
}

// stage writes each file to a hidden temp file in its destination's
// directory (never matched by an include glob: it ends in a random suffix),
// fsyncs and chmods it. On error nothing is left behind.
func stage(files []render.File) ([]staged, error) {
	var out []staged
	for _, f := range files {
		s, err := stageOne(f)
		if err != nil {
			discard(out)
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

func stageOne(f render.File) (staged, error) {
	perm := f.Perms
	if perm == 0 {
		perm = 0o644
	}
	tmp, err := atomicfile.CreateTemp(f.Path, "")
	if err != nil {
		return staged{}, fmt.Errorf("stage %s (from %s): %w", f.Path, f.Source, err)
	}
	_, err = tmp.Write(f.Data)
	err = errors.Join(err, tmp.Sync(), tmp.Close(), os.Chmod(tmp.Name(), perm))
	if err != nil {
		os.Remove(tmp.Name())
		return staged{}, fmt.Errorf("stage %s (from %s): %w", f.Path, f.Source, err)
	}
	return staged{tmp: tmp.Name(), path: f.Path}, nil
}

// commit renames the staged files over their destinations: each destination
// holds either its old bytes or its new ones, never a mix.
func commit(files []staged) error {
	for i, s := range files {
		if err := os.Rename(s.tmp, s.path); err != nil {
			discard(files[i:])
			return fmt.Errorf("swap in %s: %w", s.path, err)
		}
	}
	return nil
}

// discard removes staged files that were not committed.
func discard(files []staged) {
	for _, s := range files {
		os.Remove(s.tmp)
	}
}

// syncDirs makes the renames durable. It runs after nginx was signalled: a
// crash before it leaves the old file on disk, which is a good config too.
func syncDirs(files []staged) error {
	done := map[string]bool{}
	var errs []error
	for _, s := range files {
		dir := filepath.Dir(s.path)
		if done[dir] {
			continue
		}
		done[dir] = true
		d, err := os.Open(dir)
		if err == nil {
			err = errors.Join(d.Sync(), d.Close())
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("sync %s: %w", dir, err))
		}
	}
	return errors.Join(errs...)
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
