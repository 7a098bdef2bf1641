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

// liveRun is lbctl run in live mode, in front of a two-worker nginx with
// the Lua module, serving greeter at lb from the start.
type liveRun struct {
	c                                     *testrig.Consul
	lb, metricsAddr, cfg, socket, liveDir string
}

// startLiveRun starts lbctl run in live mode with a registered as greeter,
// and waits until a answers at the load balancer.
func startLiveRun(t *testing.T, a *testrig.Greeter) liveRun {
	t.Helper()
	r := liveRun{c: testrig.StartConsul(t)}
	r.c.Register(a.Registration("greeter"))
	n := testrig.NewNginxWith(t, testrig.NginxOptions{Lua: true, Workers: 2})
	r.lb, r.metricsAddr = testrig.LoopbackAddr(testrig.FreePort(t)), testrig.LoopbackAddr(testrig.FreePort(t))
	var yaml string
	yaml, r.liveDir = liveRunConfig(t, r.c, n, r.lb, r.metricsAddr)
	r.cfg, r.socket = supervisedConfig(t, yaml)
	startRun(t, r.cfg, r.socket)
	testrig.ExpectInstance(t, r.lb, "alpha", 10*time.Second)
	return r
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
// current instances from its first call (the seed file; lbctl holds the
// push socket across masters and pushes again), never an empty set; and
// changes after that are still applied without a reload.
func TestRunLiveNginxKilledComesBackHoldingTheCurrentSet(t *testing.T) {
	a, b, g := testrig.StartGreeter(t, "alpha", "v1"), testrig.StartGreeter(t, "beta", "v1"), testrig.StartGreeter(t, "gamma", "v1")
	r := startLiveRun(t, a)
	c, lb, cfg, socket, liveDir := r.c, r.lb, r.cfg, r.socket, r.liveDir
	c.Register(b.Registration("greeter"))
	waitHeld(t, cfg, a, b)
	if fi, err := os.Stat(liveDir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("live dir %s: %v, %v; want mode 0700", liveDir, fi.Mode(), err)
	}

	master := waitNewMaster(t, socket, 0)
	gen, err := loadgen.New(loadgen.Options{Target: lb, Clients: 4})
	if err != nil {
		t.Fatal(err)
	}
	stopLoad := gen.Start()
	t.Cleanup(func() { stopLoad() })
	if err := syscall.Kill(master.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitNewMaster(t, socket, master.PID)
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
	if n, err := testrig.Metric(r.metricsAddr, `lbctl_reloads_total{outcome="applied"}`); err != nil || n != 0 {
		t.Errorf("reloads applied: %v (%v), want 0", n, err)
	}
}
