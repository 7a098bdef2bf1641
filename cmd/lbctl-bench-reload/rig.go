package main

import (
	"fmt"
	"os"
	"testing"
)

// benchTB lets the bench reuse internal/testrig (real Consul, nginx and
// greeters on free loopback ports) outside a test: it implements the few
// testing.TB methods testrig calls. Any other method panics (nil embedded TB),
// which would be a bug in this command, not a runtime condition.
type benchTB struct {
	testing.TB
	dir      string
	n        int
	cleanups []func()
}

func newBenchTB() (*benchTB, error) {
	dir, err := os.MkdirTemp("", "lbctl-bench-")
	if err != nil {
		return nil, err
	}
	return &benchTB{dir: dir}, nil
}

func (b *benchTB) Helper()                   {}
func (b *benchTB) Cleanup(f func())          { b.cleanups = append(b.cleanups, f) }
func (b *benchTB) Logf(f string, a ...any)   { fmt.Fprintf(os.Stderr, f+"\n", a...) }
func (b *benchTB) Errorf(f string, a ...any) { fmt.Fprintf(os.Stderr, "error: "+f+"\n", a...) }
func (b *benchTB) Fatal(a ...any)            { panic(benchFatal(fmt.Sprint(a...))) }
func (b *benchTB) Fatalf(f string, a ...any) { panic(benchFatal(fmt.Sprintf(f, a...))) }
func (b *benchTB) Skip(a ...any)             { panic(benchFatal("missing: " + fmt.Sprint(a...))) }
func (b *benchTB) TempDir() string {
	b.n++
	d := fmt.Sprintf("%s/%03d", b.dir, b.n)
	if err := os.MkdirAll(d, 0o755); err != nil {
		panic(benchFatal(err.Error()))
	}
	return d
}

// close runs the cleanups, last first, and removes the temp directory.
func (b *benchTB) close() {
	for i := len(b.cleanups) - 1; i >= 0; i-- {
		b.cleanups[i]()
	}
	os.RemoveAll(b.dir)
}

// benchFatal is how testrig's Fatal reaches run, which recovers it into an error.
type benchFatal string
