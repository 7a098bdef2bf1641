package supervisor

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
)

// lockedWriter serialises whole lines from many programs onto one writer
// (lbctl's stdout or stderr), so lines never interleave mid-line.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) writeLine(b []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, _ = l.w.Write(b)
}

// lastLine keeps the last non-empty line a process wrote on one stream: the
// reason a failed start shows in its status ("nginx: [emerg] still could
// not bind()").
type lastLine struct {
	mu   sync.Mutex
	line string
}

// maxLastLine bounds what a status note quotes of a line.
const maxLastLine = 240

func (l *lastLine) set(b []byte) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return
	}
	if len(b) > maxLastLine {
		b = b[:maxLastLine]
	}
	l.mu.Lock()
	l.line = strings.ToValidUTF8(string(b), "?")
	l.mu.Unlock()
}

func (l *lastLine) get() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.line
}

// copyLines reads r line by line and writes each line, prefixed with
// prefix, to out and (when not nil) to file, and keeps it in last. Over-long
// lines are cut into 64 KiB pieces. It returns at EOF: when every process
// holding the pipe's write end (the program and anything it left behind)
// has closed it.
func copyLines(r io.Reader, prefix string, out *lockedWriter, file *rotatingFile, last *lastLine) {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			buf := make([]byte, 0, len(prefix)+len(line)+1)
			buf = append(append(buf, prefix...), line...)
			if buf[len(buf)-1] != '\n' {
				buf = append(buf, '\n')
			}
			out.writeLine(buf)
			last.set(line)
			if file != nil {
				file.writeLine(buf[len(prefix):])
			}
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

// rotatingFile is an append-only log file rotated by size: at maxBytes,
// file becomes file.1, file.1 becomes file.2 ... up to backups files.
type rotatingFile struct {
	mu       sync.Mutex
	path     string
	maxBytes int64
	backups  int
	f        *os.File
	size     int64
}

func openRotatingFile(path string, maxBytes int64, backups int) (*rotatingFile, error) {
	r := &rotatingFile{path: path, maxBytes: maxBytes, backups: backups}
	if err := r.open(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *rotatingFile) open() error {
	f, err := os.OpenFile(r.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("open log file: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("stat log file: %w", err)
	}
	r.f, r.size = f, fi.Size()
	return nil
}

// writeLine appends b, rotating first when b would take the file past maxBytes.
// Write errors are dropped: a full disk must not stop the program's output
// reaching lbctl's stdout.
func (r *rotatingFile) writeLine(b []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		return
	}
	if r.maxBytes > 0 && r.size > 0 && r.size+int64(len(b)) > r.maxBytes {
		r.rotate()
		if r.f == nil {
			return
		}
	}
	n, _ := r.f.Write(b)
	r.size += int64(n)
}

func (r *rotatingFile) rotate() {
	r.f.Close()
	r.f = nil
	if r.backups == 0 {
		_ = os.Truncate(r.path, 0)
	} else {
		for i := r.backups - 1; i >= 1; i-- {
			_ = os.Rename(fmt.Sprintf("%s.%d", r.path, i), fmt.Sprintf("%s.%d", r.path, i+1))
		}
		_ = os.Rename(r.path, r.path+".1")
	}
	_ = r.open()
}

func (r *rotatingFile) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		return nil
	}
	err := r.f.Close()
	r.f = nil
	return err
}
