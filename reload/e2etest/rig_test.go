package e2etest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lbctl/lbctl/config"
	"github.com/lbctl/lbctl/internal/testrig"
	"github.com/lbctl/lbctl/lb"
	"github.com/lbctl/lbctl/lb/lbtest"
	"github.com/lbctl/lbctl/metrics"
	"github.com/lbctl/lbctl/reload"
	"github.com/lbctl/lbctl/render"
)

// rig is the whole pipeline on real things, built by package lb as lbctl run
// builds it: Consul → catalog watch → built-in render → reload controller →
// nginx → greeter backends (and the drain publisher).
type rig struct {
	t      *testing.T
	consul *testrig.Consul
	nginx  *testrig.Nginx
	lb     *lb.LB
	ctl    *reload.Controller
	m      *metrics.Metrics
	addr   string // where nginx serves the first service (greeter by default)
	// addrs is where nginx serves each service, by name.
	addrs map[string]string
	dest  string // the services conf the built-in template writes
	// liveSocket is nginx's push socket, with rigOptions.live.
	liveSocket string
	cfg        *config.Config
	applied    atomic.Uint64
	// confirmed is what dest held when nginx was last confirmed serving it.
	confirmed atomic.Pointer[string]
}

type rigOptions struct {
	consul testrig.ConsulOptions
	wait   config.Wait
	// live: nginx with the Lua module (two workers) and live upstreams on.
	live bool
	// services behind the load balancer; each one without a Listen gets a
	// free loopback port. Empty is one service, greeter.
	services []config.Service
	// shutdownTimeout is nginx's worker_shutdown_timeout (0: testrig's 30s).
	shutdownTimeout time.Duration
}

func newRig(t *testing.T, o rigOptions) *rig {
	t.Helper()
	r := &rig{t: t, consul: testrig.StartConsul(t, o.consul), addrs: map[string]string{}}
	nopts := testrig.NginxOptions{ShutdownTimeout: o.shutdownTimeout}
	if o.live {
		nopts.Lua, nopts.Workers = true, 2
	}
	r.nginx = testrig.NewNginxWith(t, nopts)
	services := slices.Clone(o.services)
	if len(services) == 0 {
		services = []config.Service{{Name: "greeter"}}
	}
	for i := range services {
		if services[i].Listen == "" {
			services[i].Listen = testrig.LoopbackAddr(testrig.FreePort(t))
		}
		r.addrs[services[i].Name] = services[i].Listen
	}
	r.addr = services[0].Listen
	r.dest = filepath.Join(r.nginx.ConfD, "lbctl.conf")
	n := r.nginx
	cfg := &config.Config{
		LBID:     "lb-test",
		Services: services,
		Nginx: config.Nginx{Binary: n.Bin, Config: n.MainConf, Prefix: n.Dir, PIDFile: n.PIDFile, ServicesConf: r.dest,
			LiveUpstreams: o.live, LiveDir: filepath.Join(n.Dir, "live")},
		Wait: o.wait,
	}
	cfg.SetDefaults()
	r.liveSocket, r.cfg = cfg.Nginx.LiveSocket(), cfg
	r.m = metrics.New(metrics.NewRegistry())
	client, answers := r.consul.RecordingClient()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("consul's last answers to lbctl's health queries:\n%s", answers)
		}
	})
	l, err := lb.New(cfg, lb.Options{
		Consul: client, Log: testrig.Logger(t), Metrics: r.m,
		ConsulMaxBackoff: 500 * time.Millisecond,
		OnApplied: func(u render.Update) {
			r.applied.Store(u.Index)
			b, _ := os.ReadFile(r.dest)
			live := string(b)
			r.confirmed.Store(&live)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	r.lb, r.ctl = l, l.Controller()
	return r
}

// start renders once (nginx is not running yet: the file is only written),
// starts nginx on it, then runs the load balancer until the test ends. It
// returns the first render's result.
func (r *rig) start() reload.Result {
	r.t.Helper()
	res := lbtest.Run(r.t, r.lb, r.nginx)
	if res.Outcome != reload.Written {
		r.t.Fatalf("first apply: %+v; want written", res)
	}
	return res
}

// reloads is how many reloads ended with outcome.
func (r *rig) reloads(outcome reload.Outcome) int {
	return int(counter(r.m.Reloads.WithLabelValues(string(outcome))))
}

// waitServing waits until nginx is confirmed serving a file that lists
// exactly these backends.
func (r *rig) waitServing(backends ...*testrig.Greeter) {
	r.t.Helper()
	testrig.WaitFor(r.t, 20*time.Second, fmt.Sprintf("nginx serving %d backends", len(backends)), func() error {
		live := r.confirmed.Load()
		if live == nil {
			return errors.New("no reload confirmed yet")
		}
		b := []byte(*live)
		if n := strings.Count(string(b), "    server "); n != len(backends) {
			return fmt.Errorf("%d servers in:\n%s", n, b)
		}
		for _, g := range backends {
			if !strings.Contains(string(b), "server "+g.Addr) {
				return fmt.Errorf("%s missing from:\n%s", g.Addr, b)
			}
		}
		if err := r.ctl.Healthy(); err != nil {
			return err
		}
		return nil
	})
}

func counter(c *metrics.Counter) float64 { return c.Value() }

func gauge(g *metrics.Gauge) float64 { return g.Value() }
