package e2etest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/lbctl/lbctl/catalog"
	"github.com/lbctl/lbctl/config"
	"github.com/lbctl/lbctl/greeter"
	"github.com/lbctl/lbctl/greeter/greeterpb"
	"github.com/lbctl/lbctl/internal/testrig"
	"github.com/lbctl/lbctl/lb"
	"github.com/lbctl/lbctl/lb/lbtest"
	"github.com/lbctl/lbctl/lbstate"
	"github.com/lbctl/lbctl/registrar"
	"github.com/lbctl/lbctl/render"
)

func testLog(t *testing.T) *slog.Logger {
	if os.Getenv("LBCTL_E2E_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// loadBalancer runs what `lbctl run` does, built by package lb: watch →
// render → reload nginx → publish the applied indexes, until the test ends.
func loadBalancer(t *testing.T, c *testrig.Consul, n *testrig.Nginx, lbPort int, log *slog.Logger) {
	t.Helper()
	src := fmt.Sprintf("consul: {address: %q}\nnginx: {binary: %q, config: %q, prefix: %q, pid_file: %q, services_conf: %q}\n"+
		"lb_id: lb-1\nwait: {min: 10ms, max: 100ms}\nservices:\n  - name: greeter\n    listen: 127.0.0.1:%d\n",
		c.Addr, n.Bin, n.MainConf, n.Dir, n.PIDFile, filepath.Join(n.ConfD, "lbctl.conf"), lbPort)
	cfg, err := config.Parse("lbctl.yaml", []byte(src), config.Options{})
	if err != nil {
		t.Fatal(err)
	}
	queries := render.Queries(cfg.Services)
	if len(queries) != 1 {
		t.Fatalf("want one query, got %v", queries)
	}
	l, err := lb.New(cfg, lb.Options{
		Consul: c.Client, Log: log,
		MasterPID: lbtest.MasterPID(n),
		OnPublished: func(_ map[catalog.Query]uint64, err error) {
			if err != nil {
				t.Errorf("publish: %v", err)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	lbtest.Run(t, l, n)
}

// instance is a greeter backend kept registered by a registrar.
type instance struct {
	g       *testrig.Greeter
	r       *registrar.Registrar
	stopRun context.CancelFunc
	runDone chan error
}

func startInstance(t *testing.T, c *testrig.Consul, name, color string, log *slog.Logger) *instance {
	t.Helper()
	g := testrig.StartGreeter(t, name, color)
	svc, err := registrar.Service{Name: "greeter", ID: "greeter-" + name, Address: "127.0.0.1", Port: g.Port, Tags: []string{color},
		Check: registrar.Check{Type: "grpc", Interval: time.Second, Timeout: time.Second}}.Complete(registrar.Host{
		Hostname: os.Hostname, InterfaceAddrs: func() ([]net.Addr, error) { return nil, errors.New("unused") }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	in := &instance{g: g, r: registrar.New(c.Client, svc, log), stopRun: cancel, runDone: make(chan error, 1)}
	go func() { in.runDone <- in.r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-in.runDone })
	return in
}

// shutdown is `lbctl register -- app` on SIGTERM: drain, stop the app, deregister.
func (in *instance) shutdown(t *testing.T, c *testrig.Consul, l *load, log *slog.Logger) lbstate.Result {
	in.stopRun()
	<-in.runDone
	in.runDone <- nil // for the cleanup
	res, err := in.r.Drain(context.Background(), registrar.DrainOptions{Mode: registrar.DrainMaintenance,
		Timeout: 30 * time.Second, Waiter: lbstate.NewWaiter(c.Client, log)})
	if err != nil {
		t.Errorf("drain %s: %v", in.g.Instance, err)
	}
	// Keep the app up while 100 more calls flow: none may start on it now.
	l.drained(in.g.Instance)
	l.waitCalls(t, 100)
	in.g.Stop() // graceful: in-flight calls finish
	if err := in.r.Deregister(context.Background()); err != nil {
		t.Errorf("deregister %s: %v", in.g.Instance, err)
	}
	return res
}

// load is unary greeter calls through the load balancer from several
// clients, each on its own connection, counted by answering instance. A call
// that started after its instance was drained is counted as late: the drain
// promises there are none.
type load struct {
	mu         sync.Mutex
	calls      int
	failures   map[string]int
	byInstance map[string]int
	drainedAt  map[string]time.Time
	late       map[string]int
}

func (l *load) run(ctx context.Context, t *testing.T, addr string, clients int) (wait func()) {
	l.failures, l.byInstance, l.drainedAt, l.late = map[string]int{}, map[string]int{}, map[string]time.Time{}, map[string]int{}
	var wg sync.WaitGroup
	for range clients {
		conn, client, err := greeter.Dial(addr)
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			defer conn.Close()
			for ctx.Err() == nil {
				callCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				started := time.Now()
				// Each call is held 20ms, so calls are in flight when a blue stops.
				reply, err := client.SayHello(callCtx, &greeterpb.HelloRequest{Name: "e2e", DelayMs: 20})
				cancel()
				l.record(started, reply.GetInstance(), err)
			}
		})
	}
	return wg.Wait
}

// drained marks instance as drained from now on.
func (l *load) drained(instance string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.drainedAt[instance] = time.Now()
}

func (l *load) record(started time.Time, instance string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls++
	if err != nil {
		l.failures[err.Error()]++
		return
	}
	l.byInstance[instance]++
	if at, ok := l.drainedAt[instance]; ok && started.After(at) {
		l.late[instance]++
	}
}

func (l *load) snapshot() (calls, failures int, byInstance, errs, late map[string]int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, n := range l.failures {
		failures += n
	}
	return l.calls, failures, maps.Clone(l.byInstance), maps.Clone(l.failures), maps.Clone(l.late)
}

// waitCalls waits until n more calls have completed.
func (l *load) waitCalls(t *testing.T, n int) {
	t.Helper()
	from, _, _, _, _ := l.snapshot()
	testrig.WaitFor(t, 10*time.Second, fmt.Sprintf("%d more calls", n), func() error {
		if calls, _, _, _, _ := l.snapshot(); calls < from+n {
			return fmt.Errorf("%d of %d calls", calls-from, n)
		}
		return nil
	})
}

func (l *load) waitServing(t *testing.T, instances ...string) {
	t.Helper()
	testrig.WaitFor(t, 20*time.Second, fmt.Sprintf("%v to answer calls", instances), func() error {
		_, _, by, _, _ := l.snapshot()
		for _, name := range instances {
			if by[name] == 0 {
				return fmt.Errorf("%s has answered no call (%v)", name, by)
			}
		}
		return nil
	})
}

// waitApplied waits until lb-1 has confirmed serving an answer in which
// passing instances of greeter pass.
func waitApplied(t *testing.T, c *testrig.Consul, log *slog.Logger, passing int) {
	t.Helper()
	testrig.WaitFor(t, 20*time.Second, fmt.Sprintf("lb-1 to serve %d instances", passing), func() error {
		entries, meta, err := c.Client.Health().Service("greeter", "", true, nil)
		if err != nil {
			return err
		}
		if len(entries) != passing {
			return fmt.Errorf("%d passing", len(entries))
		}
		// Blocks until lb-1 confirms (or 5s); at once while it has published nothing.
		res, err := lbstate.NewWaiter(c.Client, log).Wait(context.Background(), lbstate.Target{Service: "greeter", Index: meta.LastIndex}, 5*time.Second)
		if err == nil && len(res.Confirmed) != 1 {
			return errors.New("not confirmed by lb-1")
		}
		return err
	})
}

// Blue/green under load: two blues serve, two greens join, the blues are
// drained and stopped while calls flow through nginx. No call may fail.
func TestBlueGreenDrainUnderLoadLosesNoCall(t *testing.T) {
	c := testrig.StartConsul(t)
	n := testrig.NewNginx(t)
	log := testLog(t)
	blues := []*instance{startInstance(t, c, "blue-1", "blue", log), startInstance(t, c, "blue-2", "blue", log)}
	lbPort := testrig.FreePort(t)
	loadBalancer(t, c, n, lbPort, log)

	lbAddr := testrig.LoopbackAddr(lbPort)
	waitApplied(t, c, log, 2) // both blues are in the upstream, reload confirmed, before load starts

	ctx, stopLoad := context.WithCancel(context.Background())
	l := &load{}
	waitLoad := l.run(ctx, t, lbAddr, 8)
	defer func() { stopLoad(); waitLoad() }()
	l.waitServing(t, "blue-1", "blue-2")

	startInstance(t, c, "green-1", "green", log)
	startInstance(t, c, "green-2", "green", log)
	l.waitServing(t, "green-1", "green-2")

	start := time.Now()
	var wg sync.WaitGroup
	results := make([]lbstate.Result, len(blues))
	for i, b := range blues {
		wg.Go(func() { results[i] = b.shutdown(t, c, l, log) })
	}
	wg.Wait()
	drainTime := time.Since(start)
	l.waitCalls(t, 200)
	stopLoad()
	waitLoad()
	for i, res := range results {
		if res.TimedOut || len(res.Confirmed) != 1 {
			t.Errorf("blue-%d drain: %+v, want lb-1 to confirm", i+1, res)
		}
	}
	calls, failures, by, errs, late := l.snapshot()
	var waited []time.Duration
	for _, res := range results {
		waited = append(waited, res.Waited.Round(time.Millisecond))
	}
	t.Logf("calls %d, failures %d, drain (maintenance to LB confirmed) %v, shutdown %s, by instance %v",
		calls, failures, waited, drainTime.Round(time.Millisecond), by)
	if failures != 0 {
		t.Errorf("%d of %d calls failed: %v", failures, calls, errs)
	}
	if len(late) != 0 {
		t.Errorf("drained instances got calls that started after their drain: %v", late)
	}
}
