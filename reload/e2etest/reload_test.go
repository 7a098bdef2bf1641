package e2etest

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

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

func TestBurstOf50ChangesGivesAtMostTwoReloads(t *testing.T) {
	r := newRig(t, rigOptions{})
	a := testrig.StartGreeter(t, "alpha", "v1")
	r.consul.Register(a.Registration("greeter"))
	r.start()
	testrig.ExpectInstance(t, r.addr, "alpha", 10*time.Second)
	before := r.reloads(reload.Applied)

	// 50 weight changes, one every 2ms, each sent without waiting for the last.
	reg := a.Registration("greeter")
	start := time.Now()
	tick := time.NewTicker(2 * time.Millisecond)
	errs := make(chan error, 50)
	for i := range 50 {
		<-tick.C
		reg := *reg
		reg.Meta = map[string]string{"weight": strconv.Itoa(i%9 + 2)}
		go func() { errs <- r.consul.Client.Agent().ServiceRegister(&reg) }()
	}
	tick.Stop()
	for range 50 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("50 changes sent in %s", time.Since(start))
	final := "weight=" + strconv.Itoa(49%9+2)
	testrig.WaitFor(t, 10*time.Second, "nginx to serve the last change", func() error {
		if live := r.confirmed.Load(); live == nil || !strings.Contains(*live, final) {
			return errors.New("not yet")
		}
		return r.ctl.Healthy()
	})
	if n := r.reloads(reload.Applied) - before; n > 2 || n < 1 {
		t.Fatalf("%d reloads for the burst, want 1 or 2", n)
	}
	t.Logf("%d reloads for the burst", r.reloads(reload.Applied)-before)
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
	ctx, cancel := context.WithCancel(context.Background())
	l := &runningLoad{Gen: g, cancel: cancel, done: make(chan loadgen.Report, 1)}
	go func() { rep, _ := g.Run(ctx); l.done <- rep }()
	t.Cleanup(cancel)
	return l
}

type runningLoad struct {
	*loadgen.Gen
	cancel context.CancelFunc
	done   chan loadgen.Report
}

func stopLoad(t *testing.T, l *runningLoad) loadgen.Report {
	t.Helper()
	l.cancel()
	return <-l.done
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
