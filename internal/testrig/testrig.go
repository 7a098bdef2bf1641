// Package testrig starts the real things lbctl's integration tests run
// against: a Consul agent, nginx and gRPC greeter backends, all on free
// loopback ports, all stopped when the test ends. A missing binary skips the
// test with a clear message, except under CI (CI=true), where it fails: CI
// installs everything through scripts/install-deps.sh.
package testrig

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/lbctl/lbctl/internal/freeport"
)

// FreePort returns a loopback TCP port that was free a moment ago (see
// package freeport for why not one the kernel picks).
func FreePort(t testing.TB) int {
	t.Helper()
	port, err := freeport.Get()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// WaitFor polls cond until it returns nil or timeout passes, then fails the
// test with cond's last error. It is how tests wait for events without sleeps.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	if err := Poll(timeout, cond); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// Poll is WaitFor for code that has no testing.TB: it returns cond's last error
// when timeout passes.
func Poll(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	interval := 2 * time.Millisecond
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("gave up after %s: %w", timeout, err)
		}
		time.Sleep(interval)
		interval = min(interval*2, 50*time.Millisecond)
	}
}

// findBinary looks for name in env var envVar, then each candidate, then PATH.
func findBinary(t testing.TB, name, envVar string, candidates ...string) string {
	t.Helper()
	if p := os.Getenv(envVar); p != "" {
		return p
	}
	for _, c := range candidates {
		if fi, err := os.Stat(c); err == nil && !fi.IsDir() {
			return c
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	msg := fmt.Sprintf("%s not found (set %s, or run scripts/install-deps.sh)", name, envVar)
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// CacheDir is where scripts/install-deps.sh keeps what it builds.
func CacheDir() string {
	if d := os.Getenv("LBCTL_CACHE"); d != "" {
		return d
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "lbctl")
}

// logTail returns the last n bytes of a file, for failure messages.
func logTail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	fi, _ := f.Stat()
	if fi.Size() > n {
		f.Seek(fi.Size()-n, 0)
	}
	buf := make([]byte, n)
	k, _ := f.Read(buf)
	return string(buf[:k])
}
