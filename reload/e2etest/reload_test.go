package e2etest

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/lbctl/lbctl/config"
	"github.com/lbctl/lbctl/internal/testrig"
	"github.com/lbctl/lbctl/loadgen"
	"github.com/lbctl/lbctl/reload"
	"github.com/lbctl/lbctl/render"
)

func TestChangeInConsulIsServed(t *testing.T) {
	r := newRig(t, rigOptions{})
	a, b := testrig.StartGreeter(t, "alpha", "v1"), testrig.StartGreeter(t, "beta", "v1")
	r.consul.Register(a.Registration("greeter"))
	r.start()
	testrig.ExpectInstance(t, r.addr, "alpha", 10*time.Second)

	r.consul.Register(b.Registration("greeter"))
	r.consul.Deregister("greeter-alpha")
	r.waitServing(b)
	testrig.ExpectInstance(t, r.addr, "beta", 10*time.Second)
	if n := r.reloads(reload.Applied); n < 1 {
		t.Fatalf("%d applied reloads, want at least 1", n)
	}
	if r.applied.Load() == 0 {
		t.Fatal("OnApplied never called with the Consul index")
	}
	if gauge(r.m.LastReload) == 0 {
		t.Fatal("last reload time not set")
	}
}

func TestInvalidRenderIsRejectedAndTrafficKeepsFlowing(t *testing.T) {
	r := newRig(t, rigOptions{})
	a := testrig.StartGreeter(t, "alpha", "v1")
	r.consul.Register(a.Registration("greeter"))
	r.start()
	gen := startLoad(t, loadgen.Options{Target: r.addr, Clients: 4, Streams: 2})
	good, err := os.ReadFile(r.dest)
	if err != nil {
		t.Fatal(err)
	}

	bad := string(good) + "\nupstream broken {\n    server 127.0.0.1:1 bogus_param;\n}\n"
	res, err := r.ctl.Apply(context.Background(), update(r.dest, bad, "builtin"))
	var ve *reload.ValidationError
	if res.Outcome != reload.Rejected || !errors.As(err, &ve) || !errors.Is(err, reload.ErrRejected) {
		t.Fatalf("got %+v, %v; want a rejection", res, err)
	}
	wantLine := strings.Count(string(good), "\n") + 3
	if ve.Source != "builtin" || ve.Path != r.dest || ve.Line != wantLine || !strings.Contains(ve.Output, "bogus_param") {
		t.Fatalf("rejection %+v, want builtin, %s line %d, naming bogus_param", ve, r.dest, wantLine)
	}
	if strings.Contains(ve.Output, "candidate") || strings.Contains(ve.Output, "lbctl-check") {
		t.Fatalf("rejection names a temp file, not the live one: %s", ve.Output)
	}
	if live, _ := os.ReadFile(r.dest); string(live) != string(good) {
		t.Fatalf("live file changed after a rejected render:\n%s", live)
	}
	if n := counter(r.m.ValidationFailures.WithLabelValues("builtin")); n != 1 {
		t.Fatalf("validation failures metric %v, want 1", n)
	}
	waitCalls(t, gen, gen.Snapshot().Calls+100)

	// The next good render goes through.
	b := testrig.StartGreeter(t, "beta", "v1")
	r.consul.Register(b.Registration("greeter"))
	r.waitServing(a, b)
	rep := stopLoad(t, gen)
	if rep.Failures != 0 || rep.StreamsBroken != 0 {
		t.Fatalf("load saw failures: %+v", rep)
	}
}

// Changes closer together than wait.min are folded into one reload. wait.min
// is 2s here, far more than the test's gaps between changes even on a busy
// machine, so the promise is exactly one reload for the whole burst.
func TestChangesCloserThanWaitMinAreFoldedIntoOneReload(t *testing.T) {
	r, w := startWeights(t, config.Wait{Min: 2 * time.Second, Max: 30 * time.Second})
	before := r.reloads(reload.Applied)
	for range 50 {
		w.next()
	}
	if w.maxGap >= 2*time.Second {
		t.Fatalf("the test itself paused %s between two changes, more than wait.min", w.maxGap)
	}
	t.Logf("50 changes sent in %s, at most %s apart", time.Since(w.start), w.maxGap)
	w.waitLastServed()
	if n := r.reloads(reload.Applied) - before; n != 1 {
		t.Fatalf("%d reloads for 50 changes never wait.min apart, want 1", n)
	}
}

// No change waits longer than wait.max: changes that keep coming, never
// wait.min apart, are still applied, wait.max after the first of them.
func TestChangesThatKeepComingAreAppliedAfterWaitMax(t *testing.T) {
	wait := config.Wait{Min: time.Second, Max: 2 * time.Second}
	r, w := startWeights(t, wait)
	// A trial in which the test itself paused wait.min or more between two
	// changes (a registration took that long on a loaded machine) may have
	// been applied on wait.min: it proves nothing, and the test tries again.
	const trials = 3
	for trial := 1; ; trial++ {
		w.restart()
		changeUntilReload(t, r, w, wait)
		if w.maxGap < wait.Min {
			break
		}
		if trial == trials {
			t.Fatalf("in each of %d trials the test itself paused wait.min or more between two changes (last: %s)", trials, w.maxGap)
		}
		t.Logf("trial %d proves nothing: the test itself paused %s between two changes, more than wait.min", trial, w.maxGap)
	}
	t.Logf("applied %s after the first of %d changes, at most %s apart", time.Since(w.start), w.sent, w.maxGap)
	w.waitLastServed()
}

// changeUntilReload sends a change every 50 ms until nginx is reloaded, for
// 20 s at most.
func changeUntilReload(t *testing.T, r *rig, w *weights, wait config.Wait) {
	t.Helper()
	before := r.reloads(reload.Applied)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(20 * time.Second)
	for r.reloads(reload.Applied) == before {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("no reload in 20s of changes %s apart at most: wait.max %s not honoured", w.maxGap, wait.Max)
		}
		w.next()
	}
}

// weights registers one instance again and again with a new weight each
// time, each registration done before the next, so the last one sent is
// what Consul ends up with.
type weights struct {
	t        *testing.T
	r        *rig
	reg      api.AgentServiceRegistration
	sent     int
	start    time.Time
	lastSent time.Time
	maxGap   time.Duration
}

// startWeights starts a load balancer with wait in front of one instance,
// serving, and returns it with the instance's weights to change.
func startWeights(t *testing.T, wait config.Wait) (*rig, *weights) {
	r := newRig(t, rigOptions{wait: wait})
	a := testrig.StartGreeter(t, "alpha", "v1")
	r.consul.Register(a.Registration("greeter"))
	r.start()
	testrig.ExpectInstance(t, r.addr, "alpha", 10*time.Second)
	return r, &weights{t: t, r: r, reg: *a.Registration("greeter"), start: time.Now()}
}

// restart starts counting the changes' timing anew.
func (w *weights) restart() { w.start, w.lastSent, w.maxGap = time.Now(), time.Time{}, 0 }

func (w *weights) weight() string { return strconv.Itoa(w.sent%9 + 2) }

func (w *weights) next() {
	w.t.Helper()
	w.sent++
	reg := w.reg
	reg.Meta = map[string]string{"weight": w.weight()}
	if err := w.r.consul.Client.Agent().ServiceRegister(&reg); err != nil {
		w.t.Fatal(err)
	}
	now := time.Now()
	if !w.lastSent.IsZero() {
		w.maxGap = max(w.maxGap, now.Sub(w.lastSent))
	}
	w.lastSent = now
}

func (w *weights) waitLastServed() {
	w.t.Helper()
	final := "weight=" + w.weight()
	testrig.WaitFor(w.t, 20*time.Second, "nginx to serve the last change ("+final+")", func() error {
		if live := w.r.confirmed.Load(); live == nil || !strings.Contains(*live, final) {
			return errors.New("not yet")
		}
		return w.r.ctl.Healthy()
	})
}

func TestConsulOutageLosesNoCallAndConverges(t *testing.T) {
	r := newRig(t, rigOptions{consul: testrig.ConsulOptions{Persistent: true}})
	a, b := testrig.StartGreeter(t, "alpha", "v1"), testrig.StartGreeter(t, "beta", "v1")
	r.consul.Register(a.Registration("greeter"))
	r.start()
	testrig.ExpectInstance(t, r.addr, "alpha", 10*time.Second)
	gen := startLoad(t, loadgen.Options{Target: r.addr, Clients: 4, Streams: 2})

	r.consul.Stop()
	outage, err := loadgen.New(loadgen.Options{Target: r.addr, Clients: 4, Duration: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	during, _ := outage.Run(context.Background()) // 10s of calls while Consul is down
	r.consul.Start()
	t.Logf("Consul down for %s: %d calls, %d failed, %v", during.Elapsed.Round(time.Millisecond), during.Calls, during.Failures, during.ByInstance)
	if during.Failures != 0 || during.ByInstance["alpha"] != during.Calls {
		t.Fatalf("during the outage: %+v", during)
	}
	if counter(r.m.ConsulErrors) == 0 {
		t.Fatal("no Consul error counted during the outage")
	}

	back := time.Now()
	r.consul.Register(b.Registration("greeter"))
	r.waitServing(a, b)
	t.Logf("converged %s after Consul was back; %v Consul errors counted", time.Since(back).Round(time.Millisecond), counter(r.m.ConsulErrors))
	rep := stopLoad(t, gen)
	if rep.Failures != 0 || rep.StreamsBroken != 0 {
		t.Fatalf("load saw failures: %+v", rep)
	}
}

func TestTwentyChangesUnderLoadLoseNoCallAndBreakNoStream(t *testing.T) {
	r := newRig(t, rigOptions{})
	gs := []*testrig.Greeter{testrig.StartGreeter(t, "alpha", "v1"), testrig.StartGreeter(t, "beta", "v1"), testrig.StartGreeter(t, "gamma", "v1")}
	r.consul.Register(gs[0].Registration("greeter"))
	r.consul.Register(gs[1].Registration("greeter"))
	r.start()
	testrig.ExpectInstance(t, r.addr, "alpha", 10*time.Second)
	gen := startLoad(t, loadgen.Options{Target: r.addr, Clients: 16, Streams: 4})
	waitCalls(t, gen, 200)

	// Each change swaps one instance out for the one that was out.
	for i := range 20 {
		in, out := gs[(i+2)%3], gs[i%3]
		r.consul.Register(in.Registration("greeter"))
		r.consul.Deregister("greeter-" + out.Instance)
		r.waitServing(gs[(i+1)%3], in)
	}
	waitCalls(t, gen, gen.Snapshot().Calls+200)
	gens, workers := r.ctl.OldGenerations()
	rep := stopLoad(t, gen)
	t.Logf("load: %d calls by instance %v, %d streams, %d stream messages; %d reloads; %d old generations (%d workers) alive, held by the streams",
		rep.Calls, rep.ByInstance, rep.Streams, rep.StreamMessages, r.reloads(reload.Applied), gens, workers)
	if rep.Failures != 0 || rep.StreamsBroken != 0 {
		t.Fatalf("load saw failures: %+v", rep)
	}
	if n := r.reloads(reload.Applied); n < 20 {
		t.Fatalf("%d reloads, want 20", n)
	}
}

func TestRemovedUpstreamGetsNoCallOnceOldGenerationIsGone(t *testing.T) {
	r := newRig(t, rigOptions{})
	a, b := testrig.StartGreeter(t, "alpha", "v1"), testrig.StartGreeter(t, "beta", "v1")
	r.consul.Register(a.Registration("greeter"))
	r.consul.Register(b.Registration("greeter"))
	r.start()
	gen := startLoad(t, loadgen.Options{Target: r.addr, Clients: 8})
	testrig.WaitFor(t, 10*time.Second, "both backends to answer", func() error {
		if s := gen.Snapshot(); s.ByInstance["alpha"] == 0 || s.ByInstance["beta"] == 0 {
			return errors.New("not yet")
		}
		return nil
	})

	r.consul.Deregister("greeter-alpha")
	r.waitServing(b)
	applied := time.Now()
	testrig.WaitFor(t, 15*time.Second, "the old worker generation to exit", func() error {
		if gens, workers := r.ctl.OldGenerations(); gens != 0 {
			return errors.New(strconv.Itoa(workers) + " old workers alive")
		}
		return nil
	})
	t.Logf("old generation gone %s after the reload was confirmed", time.Since(applied))
	servedByA := a.Served()
	waitCalls(t, gen, gen.Snapshot().Calls+500)
	rep := stopLoad(t, gen)
	if a.Served() != servedByA {
		t.Fatalf("alpha served %d calls after its removal was live and the old generation gone", a.Served()-servedByA)
	}
	if rep.Failures != 0 {
		t.Fatalf("load saw failures: %+v", rep)
	}
	if gauge(r.m.OldGenerations) != 0 {
		t.Fatal("old generations gauge not back to 0")
	}
}

func startLoad(t *testing.T, o loadgen.Options) *runningLoad {
	t.Helper()
	g, err := loadgen.New(o)
	if err != nil {
		t.Fatal(err)
	}
	l := &runningLoad{Gen: g, stop: g.Start()}
	t.Cleanup(func() { l.stop() })
	return l
}

type runningLoad struct {
	*loadgen.Gen
	stop func() loadgen.Report
}

func stopLoad(t *testing.T, l *runningLoad) loadgen.Report {
	t.Helper()
	return l.stop()
}

func waitCalls(t *testing.T, l *runningLoad, n int64) {
	t.Helper()
	testrig.WaitFor(t, 20*time.Second, strconv.FormatInt(n, 10)+" calls", func() error {
		if s := l.Snapshot(); s.Calls < n {
			return errors.New(strconv.FormatInt(s.Calls, 10) + " calls so far")
		}
		return nil
	})
}

func update(path, data, source string) render.Update {
	return render.Update{Files: []render.File{{Path: path, Data: []byte(data), Perms: 0o644, Source: source}}, Seen: time.Now()}
}
