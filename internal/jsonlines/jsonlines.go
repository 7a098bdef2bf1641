// Package jsonlines is one JSON value a line over a pipe: how the
// benchmarks' parent processes and the lbctl processes they start talk.
package jsonlines

import (
	"bufio"
	"encoding/json"
	"io"
	"sync"
)

// Writer writes values as JSON lines; it is safe for concurrent use.
type Writer struct {
	mu  sync.Mutex
	enc *json.Encoder
}

// NewWriter writes to w.
func NewWriter(w io.Writer) *Writer { return &Writer{enc: json.NewEncoder(w)} }

// Write writes v and a newline.
func (w *Writer) Write(v any) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.enc.Encode(v)
}

// Read calls f with each line of r that decodes as a T, skipping the
// others (a stray log line), until r ends.
func Read[T any](r io.Reader, f func(T)) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var v T
		if json.Unmarshal(sc.Bytes(), &v) == nil {
			f(v)
		}
	}
	return sc.Err()
}
