package multihost

import (
	"fmt"
	"os"
	"testing"

	"github.com/lbctl/lbctl/internal/hosts"
)

// bin is lbctl and greeter-server, built once for the package's tests.
var bin hosts.Binaries

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		return m.Run() // every test skips, saying why
	}
	dir, err := os.MkdirTemp("", "lbctl-multihost-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if bin, err = hosts.Build(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}
