package reload

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// ErrRefused is what a reload the nginx master refused wraps: nginx -t
// passed, but applying the config failed (a listen address in use, say).
var ErrRefused = errors.New("nginx refused the reload")

// errorLog reads what nginx appends to its error log after a SIGHUP.
type errorLog struct {
	path   string
	offset int64
}

// openErrorLog remembers the log's current end; without a path it reads nothing.
func openErrorLog(path string) *errorLog {
	l := &errorLog{path: path}
	if fi, err := os.Stat(path); err == nil {
		l.offset = fi.Size()
	}
	return l
}

// refusal returns an error wrapping ErrRefused when the master logged an
// [emerg] or [alert] since the mark, which is how it reports a reload it
// could not apply (it then keeps the old workers and config).
func (l *errorLog) refusal() error {
	if l == nil || l.path == "" {
		return nil
	}
	f, err := os.Open(l.path)
	if err != nil {
		return nil
	}
	defer f.Close()
	if _, err := f.Seek(l.offset, io.SeekStart); err != nil {
		return nil
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.Contains(line, "[emerg]") || strings.Contains(line, "[alert]") {
			return fmt.Errorf("%w: %s", ErrRefused, line)
		}
	}
	return nil
}
