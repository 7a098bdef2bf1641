package loadgen

import (
	"context"
	"testing"

	"github.com/lbctl/lbctl/internal/testrig"
)

func TestCountsCallsPerInstanceAndStreams(t *testing.T) {
	g1 := testrig.StartGreeter(t, "alpha", "v1")
	gen, err := New(Options{Target: g1.Addr, Clients: 4, Streams: 2, Calls: 200})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan Report, 1)
	go func() { r, _ := gen.Run(ctx); done <- r }()
	testrig.WaitFor(t, 10e9, "streams to deliver", func() error {
		if s := gen.Snapshot(); s.StreamMessages < 4 || s.Calls < 200 {
			return errNotYet
		}
		return nil
	})
	cancel()
	r := <-done
	if r.Calls != 200 || r.Failures != 0 || r.ByInstance["alpha"] != 200 {
		t.Fatalf("report %+v, want 200 calls all answered by alpha", r)
	}
	if r.Streams != 2 || r.StreamsBroken != 0 {
		t.Fatalf("report %+v, want 2 streams, none broken", r)
	}
}

func TestFailuresAreCounted(t *testing.T) {
	// Nothing listens on a port that was free a moment ago.
	gen, err := New(Options{Target: testrig.LoopbackAddr(testrig.FreePort(t)), Clients: 1, Streams: 1, Calls: 3})
	if err != nil {
		t.Fatal(err)
	}
	r, _ := gen.Run(context.Background())
	if r.Calls != 3 || r.Failures != 3 || r.StreamsBroken != 1 || len(r.Errors) == 0 {
		t.Fatalf("report %+v, want 3 failed calls and 1 broken stream", r)
	}
}

func TestRefusesNonLoopbackTarget(t *testing.T) {
	if _, err := New(Options{Target: "10.1.2.3:5000"}); err == nil {
		t.Fatal("want an error for a non-loopback target")
	}
}

type notYet struct{}

func (notYet) Error() string { return "not yet" }

var errNotYet error = notYet{}

func TestSharedConnMultiplexesEveryCallerOnOneConnection(t *testing.T) {
	g := testrig.StartGreeter(t, "alpha", "v1")
	gen, err := New(Options{Target: g.Addr, Clients: 8, SharedConn: true, Calls: 400, DelayMs: 2})
	if err != nil {
		t.Fatal(err)
	}
	r, _ := gen.Run(context.Background())
	if r.Calls != 400 || r.Failures != 0 || r.ByInstance["alpha"] != 400 {
		t.Fatalf("report %+v, want 400 calls all answered by alpha", r)
	}
	if n := g.Conns(); n != 1 {
		t.Fatalf("the greeter accepted %d connections, want the one all 8 callers share", n)
	}
}
