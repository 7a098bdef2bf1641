package demo_test

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/lbctl/lbctl/demo"
	"github.com/lbctl/lbctl/internal/testrig"
)

// buildBinaries builds lbctl and greeter-server the way scripts/demo.sh does.
func buildBinaries(t *testing.T) (lbctl, greeter string) {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-o", dir+"/", "github.com/lbctl/lbctl/cmd/lbctl", "github.com/lbctl/lbctl/cmd/greeter-server")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return filepath.Join(dir, "lbctl"), filepath.Join(dir, "greeter-server")
}

// The README's first command, end to end: every figure the demo prints is
// what it should be.
func TestDemoStack(t *testing.T) {
	consul, nginx := testrig.ConsulBinary(t), testrig.NginxBinary(t)
	lbctl, greeter := buildBinaries(t)
	out := io.Discard
	if testing.Verbose() {
		out = os.Stdout
	}
	r, err := demo.Run(context.Background(), demo.Options{
		LBCTL: lbctl, Greeter: greeter, Consul: consul, Nginx: nginx,
		Dir: t.TempDir(), Calls: 20, SwitchLoad: 8, Out: out,
	})
	if err != nil {
		t.Fatal(err)
	}
	for name, tally := range map[string]demo.Tally{"through the LB": r.ThroughLB, "via consul://": r.ViaResolver} {
		if tally.Failed != 0 || tally.ByInstance["greeter-blue-1"] == 0 || tally.ByInstance["greeter-blue-2"] == 0 {
			t.Errorf("%s: %+v, want both blues answering and no failure", name, tally)
		}
	}
	sw := r.Switch
	if sw.Failed != 0 {
		t.Errorf("blue/green switch: %d of %d calls failed", sw.Failed, sw.Calls)
	}
	if sw.Before["green"] != 0 || sw.Before["blue"] == 0 {
		t.Errorf("before the switch: %v, want blue only", sw.Before)
	}
	if sw.During["green"] == 0 {
		t.Errorf("while greens joined: %v, want green answering", sw.During)
	}
	if sw.After["blue"] != 0 || sw.After["green"] == 0 {
		t.Errorf("after the blues exited: %v, want green only", sw.After)
	}
}
