package jsonlines

import (
	"bytes"
	"slices"
	"strings"
	"testing"
)

type msg struct {
	Event string `json:"event"`
	N     int    `json:"n"`
}

func TestReadGetsWhatWriteWroteAndSkipsOtherLines(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	w.Write(msg{Event: "a", N: 1})
	buf.WriteString("a log line, not JSON\n")
	w.Write(msg{Event: "b", N: 2})
	var got []msg
	if err := Read(strings.NewReader(buf.String()), func(m msg) { got = append(got, m) }); err != nil {
		t.Fatal(err)
	}
	if want := []msg{{"a", 1}, {"b", 2}}; !slices.Equal(got, want) {
		t.Fatalf("read %v, want %v", got, want)
	}
}
