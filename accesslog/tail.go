package accesslog

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
	"time"
)

// Tailer follows a log file like tail -F: it starts at the end of the file
// as it is (older lines are not this run's), follows appends, and reopens the
// path when the file is rotated (a new inode) or truncated.
type Tailer struct {
	Path string
	// Poll is how often the file is checked for new lines.
	Poll time.Duration

	f      *os.File
	ino    uint64
	offset int64
	rest   []byte // a partial last line
}

// maxLine bounds a line kept while waiting for its end.
const maxLine = 64 << 10

// Run calls line for every complete line appended until ctx ends.
func (t *Tailer) Run(ctx context.Context, line func([]byte)) error {
	if t.Poll <= 0 {
		t.Poll = 250 * time.Millisecond
	}
	defer t.close()
	if err := t.open(true); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	tick := time.NewTicker(t.Poll)
	defer tick.Stop()
	for {
		if err := t.poll(line); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// poll reads what was appended, then reopens the path if it now names
// another file (rotation) or shrank (truncation).
func (t *Tailer) poll(line func([]byte)) error {
	if t.f == nil {
		if err := t.open(false); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // not created yet: nginx creates it when it starts
			}
			return err
		}
	}
	if err := t.readNew(line); err != nil {
		return err
	}
	fi, err := os.Stat(t.Path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil // moved away; the new one appears on nginx's reopen
		}
		return fmt.Errorf("tail %s: %w", t.Path, err)
	}
	switch {
	case inode(fi) != t.ino:
		t.close()
		return t.open(false)
	case fi.Size() < t.offset:
		t.offset, t.rest = 0, nil
		_, err := t.f.Seek(0, io.SeekStart)
		return err
	}
	return nil
}

func (t *Tailer) open(atEnd bool) error {
	f, err := os.Open(t.Path)
	if err != nil {
		return fmt.Errorf("tail %s: %w", t.Path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("tail %s: %w", t.Path, err)
	}
	t.f, t.ino, t.offset, t.rest = f, inode(fi), 0, nil
	if atEnd {
		t.offset, err = f.Seek(0, io.SeekEnd)
	}
	return err
}

func (t *Tailer) readNew(line func([]byte)) error {
	r := bufio.NewReaderSize(t.f, 64<<10)
	for {
		chunk, err := r.ReadSlice('\n')
		t.offset += int64(len(chunk))
		if err == nil {
			t.emit(chunk, line)
			continue
		}
		if errors.Is(err, bufio.ErrBufferFull) || errors.Is(err, io.EOF) {
			t.rest = append(t.rest, chunk...)
			if len(t.rest) > maxLine {
				t.rest = nil // a runaway line: drop it
			}
			if errors.Is(err, io.EOF) {
				return nil
			}
			continue
		}
		return fmt.Errorf("tail %s: %w", t.Path, err)
	}
}

func (t *Tailer) emit(chunk []byte, line func([]byte)) {
	full := chunk
	if len(t.rest) > 0 {
		full = append(t.rest, chunk...)
		t.rest = nil
	}
	if l := bytes.TrimRight(full, "\r\n"); len(l) > 0 {
		line(l)
	}
}

func (t *Tailer) close() {
	if t.f != nil {
		t.f.Close()
		t.f = nil
	}
}

func inode(fi fs.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}
