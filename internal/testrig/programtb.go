package testrig

import (
	"fmt"
	"os"
	"testing"
)

// ProgramTB lets a command (a benchmark binary) reuse testrig (real Consul,
// nginx and greeters on free loopback ports) and lbtest outside `go test`:
// it implements the testing.TB methods they call. Fatal panics with a
// Fatal error, which Catch turns back into an error. Any other method
// panics (nil embedded TB): a bug in the command, not a runtime condition.
//
// (The *testing.B that testing.Benchmark passes is no substitute: outside
// `go test` its Fatal and Log themselves panic with a nil pointer
// dereference, hiding the message they were given.)
type ProgramTB struct {
	testing.TB
	dir      string
	n        int
	cleanups []func()
	failed   bool // Errorf was called
}

// Fatal is what ProgramTB's Fatal and Fatalf panic with.
type Fatal string

func (f Fatal) Error() string { return string(f) }

// NewProgramTB makes the temp directory TempDir hands out subdirectories of.
func NewProgramTB() (*ProgramTB, error) {
	dir, err := os.MkdirTemp("", "lbctl-bench-")
	if err != nil {
		return nil, err
	}
	return &ProgramTB{dir: dir}, nil
}

func (b *ProgramTB) Helper()                 {}
func (b *ProgramTB) Cleanup(f func())        { b.cleanups = append(b.cleanups, f) }
func (b *ProgramTB) Logf(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }
func (b *ProgramTB) Errorf(f string, a ...any) {
	b.failed = true
	fmt.Fprintf(os.Stderr, "error: "+f+"\n", a...)
}

// Failed says whether Errorf was called (a Fatal panics instead).
func (b *ProgramTB) Failed() bool              { return b.failed }
func (b *ProgramTB) Fatal(a ...any)            { panic(Fatal(fmt.Sprint(a...))) }
func (b *ProgramTB) Fatalf(f string, a ...any) { panic(Fatal(fmt.Sprintf(f, a...))) }
func (b *ProgramTB) Skip(a ...any)             { panic(Fatal("missing: " + fmt.Sprint(a...))) }
func (b *ProgramTB) TempDir() string {
	b.n++
	d := fmt.Sprintf("%s/%03d", b.dir, b.n)
	if err := os.MkdirAll(d, 0o755); err != nil {
		panic(Fatal(err.Error()))
	}
	return d
}

// Close runs the cleanups, last first, and removes the temp directory.
func (b *ProgramTB) Close() {
	for i := len(b.cleanups) - 1; i >= 0; i-- {
		b.cleanups[i]()
	}
	b.cleanups = nil
	os.RemoveAll(b.dir)
}

// Catch, deferred, turns a Fatal panic into *err; any other panic goes on.
func Catch(err *error) {
	switch r := recover().(type) {
	case nil:
	case Fatal:
		*err = r
	default:
		panic(r)
	}
}
