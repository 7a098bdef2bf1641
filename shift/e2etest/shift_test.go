// Package e2etest runs lbctl shift end to end: a real Consul, a real nginx
// reloaded by the reload controller from the render engine following KV
// splits, an access-log collector publishing call counts, real gRPC greeter
// backends, and load through nginx the whole time.
package e2etest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/lbctl/lbctl/config"
	"github.com/lbctl/lbctl/greeter"
	"github.com/lbctl/lbctl/internal/faultygreeter"
	"github.com/lbctl/lbctl/internal/testrig"
	assembly "github.com/lbctl/lbctl/lb"
	"github.com/lbctl/lbctl/lb/lbtest"
	"github.com/lbctl/lbctl/loadgen"
	"github.com/lbctl/lbctl/metrics"
	"github.com/lbctl/lbctl/reload"
	"github.com/lbctl/lbctl/render"
	"github.com/lbctl/lbctl/shift"
)

// Test timing: short holds keep the test fast; nothing asserts on time.
const (
	interval = 300 * time.Millisecond
	poll     = 50 * time.Millisecond
	// sample is how many calls the meter makes in each step's window; the
	// share of green is counted over every call nginx served in that window
	// (the sample's and the load's). nginx's weighted round robin is exact
	// per worker over all its calls, so tolerance (percentage points) only
	// covers the cycle in progress at the window's edges.
	sample    = 400
	tolerance = 1.0
)

func testLog() *slog.Logger {
	if os.Getenv("LBCTL_E2E_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// lb is what `lbctl run` does for a shift, built by package lb: render engine
// following splits → reload controller → nginx, and the access-log collector
// publishing counts.
type lb struct {
	addr string
	live atomic.Pointer[string] // the built-in file nginx is confirmed to serve
}

func startLB(t *testing.T, c *testrig.Consul, n *testrig.Nginx, log *slog.Logger) *lb {
	t.Helper()
	port := testrig.FreePort(t)
	accessLog := filepath.Join(n.Dir, "grpc-access.log")
	src := fmt.Sprintf("consul: {address: %q}\nnginx: {binary: %q, config: %q, prefix: %q, pid_file: %q, services_conf: %q}\n"+
		"lb_id: lb-1\nservices:\n  - {name: greeter, tag: blue, listen: '127.0.0.1:%d', shift: true, access_log: %s}\n",
		c.Addr, n.Bin, n.MainConf, n.Dir, n.PIDFile, filepath.Join(n.ConfD, "lbctl.conf"), port, accessLog)
	cfg, err := config.Parse("lbctl.yaml", []byte(src), config.Options{})
	if err != nil {
		t.Fatal(err)
	}
	l := &lb{addr: testrig.LoopbackAddr(port)}
	m := metrics.New(metrics.NewRegistry())
	balancer, err := assembly.New(cfg, assembly.Options{
		Consul: c.Client, Log: log, Metrics: m,
		MasterPID: lbtest.MasterPID(n),
		OnApplied: func(u render.Update) {
			live := string(u.Files[0].Data)
			l.live.Store(&live)
		},
		StatsPoll: 20 * time.Millisecond, StatsPeriod: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	lbtest.Run(t, balancer, n)
	t.Cleanup(func() { // runs before lbtest.Run's, which stops the load balancer
		// Every update was applied: none rejected, failed or unconfirmed
		// (read before shutting down, which may cut a reload short).
		for _, o := range []reload.Outcome{reload.Rejected, reload.Failed, reload.TimedOut} {
			if n := m.Reloads.WithLabelValues(string(o)).Value(); n != 0 {
				t.Errorf("apply: %v updates %s", n, o)
			}
		}
	})
	return l
}

// waitServing waits until nginx is confirmed to serve a config containing s.
func (l *lb) waitServing(t *testing.T, s string) {
	t.Helper()
	testrig.WaitFor(t, 20*time.Second, "nginx to serve "+s, func() error {
		if live := l.live.Load(); live == nil || !strings.Contains(*live, s) {
			return errors.New("not yet")
		}
		return nil
	})
}

// measure makes n calls on a fresh connection and counts them by version.
func (l *lb) measure(t *testing.T, n int) (byVersion map[string]int, failed int) {
	t.Helper()
	conn, client, err := greeter.Dial(l.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	byVersion = map[string]int{}
	for range n {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		reply, err := greeter.Hello(ctx, client, "measure")
		cancel()
		if err != nil {
			failed++
			continue
		}
		byVersion[reply.GetVersion()]++
	}
	return byVersion, failed
}

func splitLine(s shift.Split, state shift.State) string {
	return fmt.Sprintf("(%s): blue %d%%, green %d%%", state, s.FromPercent(), s.ToPercent())
}

// stepMeter is a gate that, when a step begins, waits for nginx to serve the
// step's split and measures the proportions it serves.
type stepMeter struct {
	t       *testing.T
	lb      *lb
	load    *loadgen.Gen
	current shift.Split
	steps   []measured
	failed  int
}

type measured struct {
	toPercent int
	// green is green's share of every call in the step's window; sampleGreen
	// its share of the sample alone, all started on a fresh connection after
	// the step was served (a load call in flight at the window's start may
	// still come back from the old split).
	green, sampleGreen float64
}

func (m *stepMeter) Name() string { return "test-meter" }
func (m *stepMeter) Begin(ctx context.Context) error {
	m.lb.waitServing(m.t, splitLine(m.current, shift.Running))
	green, sampleGreen, failed := greenShare(m.t, m.lb, m.load)
	m.failed += failed
	m.steps = append(m.steps, measured{m.current.ToPercent(), green, sampleGreen})
	return nil
}

// greenShare makes the sample's calls and returns green's share (percent) of
// every call nginx served meanwhile, the load's as well as the sample's:
// weighted round robin splits all of them in proportion, while the sample
// alone is a subsequence interleaved with the load's calls. It also returns
// the sample's own share.
func greenShare(t *testing.T, l *lb, load *loadgen.Gen) (green, sampleGreen float64, failed int) {
	before := load.Snapshot()
	got, failed := l.measure(t, sample)
	sampleGreen = 100 * float64(got["v2"]) / float64(got["v1"]+got["v2"])
	for instance, n := range load.Snapshot().ByInstance {
		version := "v1"
		if strings.HasPrefix(instance, "green") {
			version = "v2"
		}
		got[version] += int(n - before.ByInstance[instance])
	}
	return 100 * float64(got["v2"]) / float64(got["v1"]+got["v2"]), sampleGreen, failed
}
func (m *stepMeter) Check(ctx context.Context, final bool) (shift.Verdict, error) {
	return shift.Verdict{Gate: m.Name(), Pass: true}, nil
}

type fixture struct {
	c     *testrig.Consul
	lb    *lb
	green *faultygreeter.Server
	load  *loadgen.Gen
	stop  func() loadgen.Report
}

// newFixture: two blue v1 instances, one green v2 instance failing every
// failEvery-th call, an LB, and four clients of load through it.
func newFixture(t *testing.T, failEvery int) *fixture {
	log := testLog()
	c := testrig.StartConsul(t)
	for _, name := range []string{"blue1", "blue2"} {
		g := testrig.StartGreeter(t, name, "v1")
		c.Register(g.Registration("greeter", "blue"))
	}
	green := faultygreeter.Start(t, "green1", "v2", failEvery, codes.Internal)
	c.Register(green.Registration("greeter", "green"))
	l := startLB(t, c, testrig.NewNginx(t), log)
	testrig.ExpectInstance(t, l.addr, "blue1", 10*time.Second)

	gen, err := loadgen.New(loadgen.Options{Target: l.addr, Clients: 4})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan loadgen.Report, 1)
	go func() { r, _ := gen.Run(ctx); done <- r }()
	var once sync.Once
	var report loadgen.Report
	stop := func() loadgen.Report { once.Do(func() { cancel(); report = <-done }); return report }
	t.Cleanup(func() { stop() })
	return &fixture{c: c, lb: l, green: green, load: gen, stop: stop}
}

func (f *fixture) plan() shift.Plan {
	return shift.Plan{Service: "greeter", From: "blue", To: "green", Steps: []int{10, 50, 100}, Interval: interval, Poll: poll}
}

func TestShiftServesEachStepsProportionsWithoutFailedCalls(t *testing.T) {
	f := newFixture(t, 0)
	meter := &stepMeter{t: t, lb: f.lb, load: f.load}
	final, err := shift.Shift(context.Background(), f.c.Client, f.plan(), shift.Options{
		MaxErrorRate: 0.01, MinCalls: 10, ExtraGates: []shift.Gate{meter},
		OnEvent: func(e shift.Event) {
			if e.Kind == shift.StepStarted {
				meter.current = e.Split
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if final.State != shift.Done || final.ToPercent() != 100 {
		t.Fatalf("final split %s", final)
	}
	f.lb.waitServing(t, splitLine(final, shift.Done))
	report := f.stop()
	for _, m := range meter.steps {
		t.Logf("step %3d%%: green served %.1f%% of the calls in the window (%d sampled plus the load's)", m.toPercent, m.green, sample)
		if d := m.green - float64(m.toPercent); d > tolerance || d < -tolerance || (m.toPercent == 100 && m.sampleGreen != 100) {
			t.Errorf("step %d%%: green served %.1f%% of the window (tolerance %.0f points) and %.1f%% of the sample (all of it at 100)",
				m.toPercent, m.green, tolerance, m.sampleGreen)
		}
	}
	if len(meter.steps) != 3 {
		t.Errorf("measured %d steps, want 3", len(meter.steps))
	}
	t.Logf("load: %d calls, %d failed, by instance %v", report.Calls, report.Failures, report.ByInstance)
	if report.Failures != 0 || meter.failed != 0 || report.Calls == 0 {
		t.Fatalf("failed calls: load %d %v, measuring %d", report.Failures, report.Errors, meter.failed)
	}
}

func TestBadGreenRollsBackToBlue(t *testing.T) {
	f := newFixture(t, 4) // green fails a quarter of its calls
	var steps []int
	_, err := shift.Shift(context.Background(), f.c.Client, f.plan(), shift.Options{
		MaxErrorRate: 0.01, MinCalls: 10,
		OnEvent: func(e shift.Event) {
			if e.Kind == shift.StepStarted {
				steps = append(steps, e.Split.ToPercent())
			}
		},
	})
	if !errors.Is(err, shift.ErrRolledBack) || !strings.Contains(err.Error(), "gate error-rate failed") {
		t.Fatalf("err = %v, want a rollback by the error-rate gate", err)
	}
	t.Logf("steps started %v; %v", steps, err)
	stored, _, lerr := shift.NewKV(f.c.Client).Load(context.Background(), "greeter")
	if lerr != nil || stored.State != shift.RolledBack || stored.FromPercent() != 100 || !strings.Contains(stored.Reason, "error-rate") {
		t.Fatalf("KV holds %+v (%v), want all on blue, rolled back, with the reason", stored, lerr)
	}
	f.lb.waitServing(t, splitLine(stored, shift.RolledBack))
	got, failed := f.lb.measure(t, 200)
	if got["v1"] != 200 || failed != 0 {
		t.Fatalf("after the rollback: %v, %d failed; want all 200 on blue", got, failed)
	}
	report := f.stop()
	t.Logf("load: %d calls, %d failed %v; green failed %d on purpose", report.Calls, report.Failures, report.Errors, f.green.Failed())
	for what, n := range report.Errors {
		if !strings.HasPrefix(what, "Internal: green1 fails on purpose") {
			t.Errorf("%d calls failed with %q: not the bad version's own failure", n, what)
		}
	}
	if report.Failures != f.green.Failed() {
		t.Errorf("%d calls failed, green failed %d: failures beyond the bad version's own", report.Failures, f.green.Failed())
	}
}

// interruptAt is a gate that cancels the shift (Ctrl-C) once the step at
// pct has begun and nginx serves it.
type interruptAt struct {
	lb      *lb
	t       *testing.T
	pct     int
	current *shift.Split
	cancel  context.CancelFunc
}

func (g *interruptAt) Name() string { return "test-interrupt" }
func (g *interruptAt) Begin(ctx context.Context) error {
	if g.current.ToPercent() == g.pct {
		g.lb.waitServing(g.t, splitLine(*g.current, shift.Running))
		g.cancel()
	}
	return nil
}
func (g *interruptAt) Check(ctx context.Context, final bool) (shift.Verdict, error) {
	return shift.Verdict{Gate: g.Name(), Pass: true}, nil
}

func TestInterruptedShiftKeepsServingTheLastSplit(t *testing.T) {
	f := newFixture(t, 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var current shift.Split
	gate := &interruptAt{lb: f.lb, t: t, pct: 50, current: &current, cancel: cancel}
	_, err := shift.Shift(ctx, f.c.Client, f.plan(), shift.Options{
		MaxErrorRate: 0.01, MinCalls: 10, ExtraGates: []shift.Gate{gate},
		OnEvent: func(e shift.Event) {
			if e.Kind == shift.StepStarted {
				current = e.Split
			}
		},
	})
	if !errors.Is(err, shift.ErrInterrupted) {
		t.Fatalf("err = %v, want interrupted", err)
	}
	stored, _, _ := shift.NewKV(f.c.Client).Load(context.Background(), "greeter")
	if stored.State != shift.Interrupted || stored.ToPercent() != 50 {
		t.Fatalf("KV holds %s, want 50%% green, interrupted", stored)
	}
	f.lb.waitServing(t, splitLine(stored, shift.Interrupted))
	green, _, failed := greenShare(t, f.lb, f.load)
	t.Logf("after the interruption: green served %.1f%% of the calls in the window", green)
	if failed != 0 || green < 50-tolerance || green > 50+tolerance {
		t.Fatalf("after the interruption: green %.1f%%, %d failed; want 50%% green within %.0f points", green, failed, tolerance)
	}
	if report := f.stop(); report.Failures != 0 {
		t.Fatalf("%d calls failed: %v", report.Failures, report.Errors)
	}
}
