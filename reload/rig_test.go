package reload

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lbctl/lbctl/catalog"
	"github.com/lbctl/lbctl/config"
	"github.com/lbctl/lbctl/internal/testrig"
	"github.com/lbctl/lbctl/metrics"
	"github.com/lbctl/lbctl/render"
)

// rig is the whole pipeline on real things: Consul → catalog watch → built-in
// render → Controller → nginx → greeter backends.
type rig struct {
	t       *testing.T
	consul  *testrig.Consul
	nginx   *testrig.Nginx
	ctl     *Controller
	m       *metrics.Metrics
	engine  *render.Engine
	addr    string // where nginx serves the greeter service
	dest    string // the services conf the built-in template writes
	applied atomic.Uint64
	// confirmed is what dest held when nginx was last confirmed serving it.
	confirmed atomic.Pointer[string]
}

type rigOptions struct {
	consul testrig.ConsulOptions
	wait   config.Wait
}

func newRig(t *testing.T, o rigOptions) *rig {
	t.Helper()
	r := &rig{t: t, consul: testrig.StartConsul(t, o.consul), nginx: testrig.NewNginx(t)}
	r.addr = testrig.LoopbackAddr(testrig.FreePort(t))
	r.dest = filepath.Join(r.nginx.ConfD, "lbctl.conf")
	cfg := &config.Config{
		Services: []config.Service{{Name: "greeter", Listen: r.addr}},
		Nginx:    config.Nginx{ServicesConf: r.dest},
	}
	cfg.SetDefaults()
	log := testLogger(t)
	r.m = metrics.New(metrics.NewRegistry())
	watcher := catalog.NewWatcher(r.consul.Client, render.Queries(cfg.Services), log)
	watcher.OnError = func(catalog.Query, error) { r.m.ConsulErrors.Inc() }
	watcher.MaxBackoff = 500 * time.Millisecond
	r.engine = render.NewEngine(cfg, watcher, nil, nil, log)
	r.ctl = New(Options{
		Nginx: nginxConfig(r.nginx),
		Wait:  o.wait, Metrics: r.m, Log: log,
		OnApplied: func(u render.Update) {
			r.applied.Store(u.Index)
			b, _ := os.ReadFile(r.dest)
			live := string(b)
			r.confirmed.Store(&live)
		},
	})
	return r
}

// start renders once (nginx is not running yet: the file is only written),
// starts nginx on it, then runs the render engine and the controller until
// the test ends.
func (r *rig) start() {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	u, err := r.engine.Once(ctx)
	if err != nil {
		r.t.Fatal(err)
	}
	if res, err := r.ctl.Apply(ctx, u); err != nil || res.Outcome != Written {
		r.t.Fatalf("first apply: %+v, %v; want written", res, err)
	}
	r.nginx.Start()
	r.run()
}

func (r *rig) run() {
	ctx, cancel := context.WithCancel(context.Background())
	updates := make(chan render.Update, 1)
	var wg sync.WaitGroup
	wg.Go(func() { r.engine.Run(ctx, updates) })
	wg.Go(func() { r.ctl.Run(ctx, updates) })
	r.t.Cleanup(func() { cancel(); wg.Wait() })
}

// reloads is how many reloads ended with outcome.
func (r *rig) reloads(outcome Outcome) int {
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

type testWriter struct {
	t    *testing.T
	mu   sync.Mutex
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

func testLogger(t *testing.T) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() })
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func nginxConfig(n *testrig.Nginx) config.Nginx {
	return nginxConfigOf(n.Bin, n.MainConf, n.Dir, n.PIDFile)
}

func nginxConfigOf(bin, main, prefix, pidFile string) config.Nginx {
	return config.Nginx{Binary: bin, Config: main, Prefix: prefix, PIDFile: pidFile}
}

func newMetrics() *metrics.Metrics { return metrics.New(metrics.NewRegistry()) }
