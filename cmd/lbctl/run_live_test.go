package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lbctl/lbctl/internal/testrig"
	"github.com/lbctl/lbctl/loadgen"
	"github.com/lbctl/lbctl/supervisor"
)

// liveRunConfig is lbRunConfig's load balancer, without its registration,
// with live upstreams on and metrics served at metricsAddr.
// It returns the config and the live directory.
func liveRunConfig(t *testing.T, c *testrig.Consul, n *testrig.Nginx, lb, metricsAddr string) (yaml, liveDir string) {
	src := lbRunConfig(c, n, lb)
	src = src[:strings.Index(src, "register:")]
	liveDir = filepath.Join(t.TempDir(), "live")
	nginx := nginxYAML(n)
	src = strings.Replace(src, nginx, strings.TrimSuffix(nginx, "}\n")+fmt.Sprintf(", live_upstreams: true, live_dir: %q}\n", liveDir), 1)
	return src + fmt.Sprintf("http: {address: %q}\n", metricsAddr), liveDir
}

// upstreamsHeld is `lbctl status upstreams`: what nginx holds, read back.
func upstreamsHeld(t *testing.T, cfg string) string {
	t.Helper()
	out, err := runLbctl(context.Background(), "status", "upstreams", "-c", cfg)
	if err != nil {
		t.Fatalf("lbctl status upstreams: %v\n%s", err, out)
	}
	return out
}

// waitHeld waits until nginx holds exactly these backends for greeter.
func waitHeld(t *testing.T, cfg string, backends ...*testrig.Greeter) {
	t.Helper()
	testrig.WaitFor(t, 10*time.Second, fmt.Sprintf("nginx holding %d instances", len(backends)), func() error {
		out := upstreamsHeld(t, cfg)
		if n := strings.Count(out, "grpc_greeter") - strings.Count(out, "(none"); n != len(backends) {
			return fmt.Errorf("%d instances held:\n%s", n, out)
		}
		for _, g := range backends {
			if !strings.Contains(out, g.Addr) {
				return fmt.Errorf("%s not held:\n%s", g.Addr, out)
			}
		}
		return nil
	})
}

// lbctl run in live mode: nginx killed with SIGKILL comes back holding the
// current instances from its first call (the seed file; lbctl removes the
// socket the dead master left and pushes again), never an empty set; and
// changes after that are still applied without a reload.
func TestRunLiveNginxKilledComesBackHoldingTheCurrentSet(t *testing.T) {
	c := testrig.StartConsul(t)
	a, b, g := testrig.StartGreeter(t, "alpha", "v1"), testrig.StartGreeter(t, "beta", "v1"), testrig.StartGreeter(t, "gamma", "v1")
	c.Register(a.Registration("greeter"))
	n := testrig.NewNginxWith(t, testrig.NginxOptions{Lua: true, Workers: 2})
	lb, metricsAddr := testrig.LoopbackAddr(testrig.FreePort(t)), testrig.LoopbackAddr(testrig.FreePort(t))
	yaml, liveDir := liveRunConfig(t, c, n, lb, metricsAddr)
	cfg, socket := supervisedConfig(t, yaml)
	startRun(t, cfg, socket)
	testrig.ExpectInstance(t, lb, "alpha", 10*time.Second)
	c.Register(b.Registration("greeter"))
	waitHeld(t, cfg, a, b)
	if fi, err := os.Stat(liveDir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("live dir %s: %v, %v; want mode 0700", liveDir, fi.Mode(), err)
	}

	var master supervisor.Status
	testrig.WaitFor(t, 20*time.Second, "nginx RUNNING", func() error {
		if master = nginxStatus(t, socket); master.State != supervisor.Running {
			return fmt.Errorf("nginx %s (%s)", master.State, master.Note)
		}
		return nil
	})
	gen, err := loadgen.New(loadgen.Options{Target: lb, Clients: 4})
	if err != nil {
		t.Fatal(err)
	}
	stopLoad := gen.Start()
	t.Cleanup(func() { stopLoad() })
	if err := syscall.Kill(master.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testrig.WaitFor(t, 20*time.Second, "a new nginx master RUNNING", func() error {
		st := nginxStatus(t, socket)
		if st.State != supervisor.Running || st.PID == master.PID {
			return fmt.Errorf("nginx %s pid %d (%s)", st.State, st.PID, st.Note)
		}
		return nil
	})
	testrig.ExpectInstance(t, lb, "beta", 10*time.Second)
	rep := stopLoad()
	for e, count := range rep.Errors {
		if strings.Contains(e, "no healthy instances") {
			t.Errorf("the restarted nginx served an empty set: %d calls failed with %s", count, e)
		}
	}
	t.Logf("around the kill: %d calls, %d failed: %v", rep.Calls, rep.Failures, rep.Errors)

	c.Register(g.Registration("greeter"))
	waitHeld(t, cfg, a, b, g)
	testrig.ExpectInstance(t, lb, "gamma", 10*time.Second)
	if n, err := testrig.Metric(metricsAddr, `lbctl_reloads_total{outcome="applied"}`); err != nil || n != 0 {
		t.Errorf("reloads applied: %v (%v), want 0", n, err)
	}
}
