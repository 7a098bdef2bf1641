package main

import (
	"strings"
	"testing"

	"github.com/lbctl/lbctl/internal/testrig"
)

func TestPrintsCallsPerInstance(t *testing.T) {
	g := testrig.StartGreeter(t, "alpha", "v1")
	var out strings.Builder
	if err := run([]string{"-target", g.Addr, "-clients", "2", "-streams", "0", "-calls", "20", "-duration", "0"}, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "calls 20  failures 0") || !strings.Contains(out.String(), "answered by alpha") {
		t.Fatalf("output:\n%s", out.String())
	}
}

func TestFailsOnFailedCalls(t *testing.T) {
	var out strings.Builder
	err := run([]string{"-target", testrig.LoopbackAddr(testrig.FreePort(t)), "-clients", "1", "-streams", "0", "-calls", "2"}, &out)
	if err == nil || !strings.Contains(err.Error(), "2 failed calls") {
		t.Fatalf("got %v, want 2 failed calls\n%s", err, out.String())
	}
}
