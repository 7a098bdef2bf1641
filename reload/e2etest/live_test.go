package e2etest

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lbctl/lbctl/config"
	"github.com/lbctl/lbctl/internal/testrig"
	"github.com/lbctl/lbctl/lb"
	"github.com/lbctl/lbctl/lb/lbtest"
	"github.com/lbctl/lbctl/live"
	"github.com/lbctl/lbctl/loadgen"
	"github.com/lbctl/lbctl/reload"
)

// liveHolds waits until nginx, read back through its push socket, holds
// exactly these backends for the greeter upstream.
func (r *rig) liveHolds(backends ...*testrig.Greeter) {
	r.t.Helper()
	client := live.NewClient(r.liveSocket)
	testrig.WaitFor(r.t, 20*time.Second, fmt.Sprintf("nginx holding %d backends", len(backends)), func() error {
		set, err := client.Read(context.Background())
		if err != nil {
			return err
		}
		var got, want []string
		for _, p := range set["grpc_greeter"].Peers {
			got = append(got, fmt.Sprintf("127.0.0.1:%d", p.Port))
		}
		for _, g := range backends {
			want = append(want, g.Addr)
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			return fmt.Errorf("nginx holds %v, want %v", got, want)
		}
		return r.ctl.Healthy()
	})
}

// Instance changes reach nginx as data: served at once, with no reload.
// The first render's nginx -t ran before Consul answered.
func TestLiveInstanceChangesAreServedWithoutAReload(t *testing.T) {
	r := newRig(t, rigOptions{live: true})
	a, b := testrig.StartGreeter(t, "alpha", "v1"), testrig.StartGreeter(t, "beta", "v1")
	r.consul.Register(a.Registration("greeter"))
	if first := r.start(); !first.Prevalidated {
		// The live config does not depend on Consul's answers: its nginx -t
		// runs while Consul is read (lb.Start, Controller.Prevalidate).
		t.Errorf("first render validated after Consul answered (%s), want while it was read", first.Validate)
	}
	if !r.lb.Live() {
		t.Fatal("live upstreams off with the Lua module loaded")
	}
	testrig.ExpectInstance(t, r.addr, "alpha", 10*time.Second)

	r.consul.Register(b.Registration("greeter"))
	r.consul.Deregister("greeter-alpha")
	r.liveHolds(b)
	testrig.ExpectOnly(t, r.addr, "beta", 20, 10*time.Second)
	r.consul.Deregister("greeter-beta")
	r.liveHolds()
	if n := r.reloads(reload.Applied); n != 0 {
		t.Errorf("%d reloads for instance changes, want 0", n)
	}
	if n := counter(r.m.LiveUpdates.WithLabelValues(string(reload.Applied))); n < 2 {
		t.Errorf("%v live updates applied, want at least 2", n)
	}
}

// Without the Lua module, live upstreams fall back to a reload per change,
// and lbctl says so at start.
func TestLiveWithoutTheLuaModuleReloadsAndSaysSo(t *testing.T) {
	n := testrig.NewNginx(t) // no Lua module loaded
	cfg := &config.Config{
		LBID:     "lb-test",
		Services: []config.Service{{Name: "greeter", Listen: testrig.LoopbackAddr(testrig.FreePort(t))}},
		Nginx: config.Nginx{Binary: n.Bin, Config: n.MainConf, Prefix: n.Dir, PIDFile: n.PIDFile,
			ServicesConf: filepath.Join(n.ConfD, "lbctl.conf"), LiveUpstreams: true, LiveDir: filepath.Join(n.Dir, "live")},
	}
	cfg.SetDefaults()
	var logs testrig.LogBuffer
	consul := testrig.StartConsul(t)
	a := testrig.StartGreeter(t, "alpha", "v1")
	consul.Register(a.Registration("greeter"))
	l, err := lb.New(cfg, lb.Options{Consul: consul.Client, Log: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if l.Live() {
		t.Fatal("live upstreams on although nginx has no Lua module")
	}
	if !strings.Contains(logs.String(), "nginx has no Lua module") || !strings.Contains(logs.String(), "every instance change reloads nginx") {
		t.Fatalf("start-up log does not say live upstreams are off:\n%s", logs.String())
	}
	lbtest.Run(t, l, n)
	testrig.ExpectInstance(t, cfg.Services[0].Listen, "alpha", 10*time.Second)
	b := testrig.StartGreeter(t, "beta", "v1")
	consul.Register(b.Registration("greeter"))
	consul.Deregister("greeter-alpha")
	testrig.ExpectOnly(t, cfg.Services[0].Listen, "beta", 10, 10*time.Second)
	if n := l.Metrics().Reloads.WithLabelValues(string(reload.Applied)).Value(); n < 1 {
		t.Fatalf("%v reloads: the change did not go through a reload", n)
	}
}

// A restarted lbctl pushes at start to the nginx that kept running, and with
// Consul unreachable nginx keeps the set last pushed.
func TestLiveRestartedLbctlPushesAndConsulOutageKeepsTheSet(t *testing.T) {
	r := newRig(t, rigOptions{live: true, consul: testrig.ConsulOptions{Persistent: true}})
	a, b := testrig.StartGreeter(t, "alpha", "v1"), testrig.StartGreeter(t, "beta", "v1")
	r.consul.Register(a.Registration("greeter"))
	ctx, stopFirst := context.WithCancel(context.Background())
	if _, err := r.lb.Start(ctx); err != nil {
		t.Fatal(err)
	}
	r.nginx.Start()
	done := make(chan error, 1)
	go func() { done <- r.lb.Run(ctx) }()
	r.liveHolds(a)
	stopFirst()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// lbctl is down: nginx goes on serving alpha; beta registers meanwhile.
	r.consul.Register(b.Registration("greeter"))
	testrig.ExpectOnly(t, r.addr, "alpha", 10, 5*time.Second)
	second, err := lb.New(r.cfg, lb.Options{Consul: r.consul.Client, Log: testrig.Logger(t), Metrics: r.m})
	if err != nil {
		t.Fatal(err)
	}
	r.lb, r.ctl = second, second.Controller()
	lbtest.RunOnRunningNginx(t, second)
	r.liveHolds(a, b)

	r.consul.Stop()
	rep, err := loadgen.New(loadgen.Options{Target: r.addr, Clients: 4, Calls: 400})
	if err != nil {
		t.Fatal(err)
	}
	during, _ := rep.Run(context.Background())
	r.consul.Start()
	if during.Failures != 0 || during.ByInstance["alpha"] == 0 || during.ByInstance["beta"] == 0 {
		t.Fatalf("with Consul down, nginx did not keep serving alpha and beta: %+v", during)
	}
	r.liveHolds(a, b)
	if n := r.reloads(reload.Applied); n != 0 {
		t.Errorf("%d reloads, want 0: neither a restart of lbctl nor a Consul outage changes nginx's structure", n)
	}
}
