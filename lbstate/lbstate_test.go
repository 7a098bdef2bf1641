package lbstate

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/lbctl/lbctl/catalog"
	"github.com/lbctl/lbctl/internal/testrig"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func TestVerdict(t *testing.T) {
	blue := Target{Service: "greeter", Tags: []string{"blue", "v2"}, Index: 100}
	cases := []struct {
		name                string
		queries             []QueryIndex
		relevant, confirmed bool
	}{
		{"untagged query at the index", []QueryIndex{{Service: "greeter", Index: 100}}, true, true},
		{"untagged query behind", []QueryIndex{{Service: "greeter", Index: 99}}, true, false},
		{"our tag past the index", []QueryIndex{{Service: "greeter", Tag: "blue", Index: 120}}, true, true},
		{"another tag only", []QueryIndex{{Service: "greeter", Tag: "green", Index: 1}}, false, false},
		{"another service only", []QueryIndex{{Service: "billing", Index: 1}}, false, false},
		{"another datacenter only", []QueryIndex{{Service: "greeter", Datacenter: "dc2", Index: 1}}, false, false},
		{"one of two routing queries behind", []QueryIndex{
			{Service: "greeter", Index: 150}, {Service: "greeter", Tag: "v2", Index: 90}, {Service: "greeter", Tag: "green", Index: 1},
		}, true, false},
		{"no queries", nil, false, false},
	}
	for _, tc := range cases {
		relevant, confirmed := blue.verdict(State{Queries: tc.queries})
		if relevant != tc.relevant || confirmed != tc.confirmed {
			t.Errorf("%s: relevant %v confirmed %v, want %v %v", tc.name, relevant, confirmed, tc.relevant, tc.confirmed)
		}
	}
}

func getState(t *testing.T, c *testrig.Consul, id string) (*api.KVPair, State) {
	t.Helper()
	pair, _, err := c.Client.KV().Get(Prefix+id, nil)
	if err != nil {
		t.Fatal(err)
	}
	var st State
	if pair != nil {
		if err := json.Unmarshal(pair.Value, &st); err != nil {
			t.Fatal(err)
		}
	}
	return pair, st
}

// runPublisher runs p until the returned stop is called (or the test ends).
func runPublisher(t *testing.T, p *Publisher) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
		}
	}
	t.Cleanup(stop)
	return stop
}

func TestPublishedStateLivesWithItsSession(t *testing.T) {
	c := testrig.StartConsul(t)
	p := NewPublisher(c.Client, "lb-1", quiet)
	stop := runPublisher(t, p)
	q := map[catalog.Query]uint64{{Service: "greeter", Tag: "blue"}: 42, {Service: "billing"}: 7}
	if err := p.Publish(context.Background(), q); err != nil {
		t.Fatal(err)
	}
	pair, st := getState(t, c, "lb-1")
	if pair == nil || pair.Session == "" {
		t.Fatalf("state not held by a session: %+v", pair)
	}
	if st.ID != "lb-1" || len(st.Queries) != 2 || st.Queries[0].Service != "billing" || st.Queries[1].Index != 42 || st.ConfirmedAt.IsZero() {
		t.Fatalf("state %+v, want both queries sorted with their indexes", st)
	}
	stop()
	if pair, _ := getState(t, c, "lb-1"); pair != nil {
		t.Fatalf("state outlived its publisher: %+v", pair)
	}
}

// cuttable is an http.RoundTripper to a real agent that fails every request
// while cut is set: Consul out of reach.
type cuttable struct {
	next http.RoundTripper
	cut  atomic.Bool
}

func (c *cuttable) RoundTrip(req *http.Request) (*http.Response, error) {
	if c.cut.Load() {
		return nil, errors.New("cut off")
	}
	return c.next.RoundTrip(req)
}

// A load balancer is unreachable (for /healthz) only once no renew and no
// write has succeeded for longer than the session TTL, and reachable again
// after the next renew that gets through.
func TestPublisherUnreachableLongerThanItsSessionTTL(t *testing.T) {
	c := testrig.StartConsul(t)
	link := &cuttable{next: &http.Transport{}}
	client, err := api.NewClient(&api.Config{Address: c.Addr, HttpClient: &http.Client{Transport: link}})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	p := NewPublisher(client, "lb-1", quiet)
	p.Now = func() time.Time { return now }
	ctx := context.Background()
	if err := p.Reachable(); err != nil {
		t.Fatalf("before any attempt: %v", err)
	}
	if err := p.Publish(ctx, map[catalog.Query]uint64{{Service: "greeter"}: 1}); err != nil {
		t.Fatal(err)
	}
	link.cut.Store(true)
	last := now
	for _, at := range []time.Duration{2 * time.Second, 6 * time.Second, 10 * time.Second} {
		now = last.Add(at)
		if err := p.refresh(ctx); err == nil {
			t.Fatalf("%s into the cut: the renew got through", at)
		}
		if err := p.Reachable(); err != nil {
			t.Fatalf("%s into the cut (TTL %s): already unreachable: %v", at, p.SessionTTL, err)
		}
	}
	now = last.Add(10*time.Second + time.Millisecond)
	err = p.Reachable()
	if err == nil || !strings.Contains(err.Error(), "longer than the session TTL 10s") || !strings.Contains(err.Error(), "cut off") {
		t.Fatalf("past the TTL: %v, want the reason and the last error", err)
	}
	t.Logf("/healthz says: %v", err)
	link.cut.Store(false)
	if err := p.refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.Reachable(); err != nil {
		t.Fatalf("after a renew got through: %v", err)
	}
}

func TestPublisherRecoversItsKey(t *testing.T) {
	c := testrig.StartConsul(t)
	old := NewPublisher(c.Client, "lb-1", quiet)
	if err := old.Publish(context.Background(), map[catalog.Query]uint64{{Service: "greeter"}: 1}); err != nil {
		t.Fatal(err)
	}
	// A restarted process of the same load balancer takes its key over from
	// the old process's still-live session.
	p := NewPublisher(c.Client, "lb-1", quiet)
	p.RefreshEvery = 20 * time.Millisecond
	runPublisher(t, p)
	if err := p.Publish(context.Background(), map[catalog.Query]uint64{{Service: "greeter"}: 2}); err != nil {
		t.Fatal(err)
	}
	pair, st := getState(t, c, "lb-1")
	if st.Queries[0].Index != 2 || pair.Session == old.session {
		t.Fatalf("new process did not take over: index %d", st.Queries[0].Index)
	}
	// Its session is destroyed behind its back (say, a node check failed):
	// Run publishes again.
	if _, err := c.Client.Session().Destroy(pair.Session, nil); err != nil {
		t.Fatal(err)
	}
	testrig.WaitFor(t, 5*time.Second, "the state to be published again", func() error {
		pair, st := getState(t, c, "lb-1")
		if pair == nil || st.Queries[0].Index != 2 {
			return errors.New("not back yet")
		}
		return nil
	})
}

func TestWaiterWaitsForEveryRoutingLoadBalancer(t *testing.T) {
	c := testrig.StartConsul(t)
	ctx := context.Background()
	lb1, lb2 := NewPublisher(c.Client, "lb-1", quiet), NewPublisher(c.Client, "lb-2", quiet)
	runPublisher(t, lb1)
	runPublisher(t, lb2)
	for _, p := range []*Publisher{lb1, lb2} {
		if err := p.Publish(ctx, map[catalog.Query]uint64{{Service: "greeter"}: 10}); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan Result, 1)
	go func() {
		res, err := NewWaiter(c.Client, quiet).Wait(ctx, Target{Service: "greeter", Index: 20}, time.Minute)
		if err != nil {
			t.Error(err)
		}
		done <- res
	}()
	if err := lb1.Publish(ctx, map[catalog.Query]uint64{{Service: "greeter"}: 20}); err != nil {
		t.Fatal(err)
	}
	if err := lb2.Publish(ctx, map[catalog.Query]uint64{{Service: "greeter"}: 25}); err != nil {
		t.Fatal(err)
	}
	res := <-done
	if res.TimedOut || !slices.Equal(res.Confirmed, []string{"lb-1", "lb-2"}) || res.Index != 20 {
		t.Fatalf("result %+v, want both confirmed", res)
	}
}

func TestWaiterNoLoadBalancersReturnsAtOnce(t *testing.T) {
	c := testrig.StartConsul(t)
	res, err := NewWaiter(c.Client, quiet).Wait(context.Background(), Target{Service: "greeter", Index: 5}, time.Minute)
	if err != nil || res.TimedOut || len(res.Confirmed)+len(res.Pending) != 0 {
		t.Fatalf("Wait = %+v, %v; want an immediate, empty result", res, err)
	}
}

func TestWaiterConsulDownTimesOutWithTheReason(t *testing.T) {
	client, err := api.NewClient(&api.Config{Address: testrig.LoopbackAddr(testrig.FreePort(t))})
	if err != nil {
		t.Fatal(err)
	}
	w := NewWaiter(client, quiet)
	w.RetryMin, w.RetryMax = time.Millisecond, 10*time.Millisecond
	res, err := w.Wait(context.Background(), Target{Service: "greeter", Index: 5}, 2*time.Second) // time for a first refused connection on a loaded machine
	if err != nil || !res.TimedOut || res.LastErr == nil {
		t.Fatalf("Wait = %+v, %v; want a timeout carrying the last Consul error", res, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := w.Wait(ctx, Target{Service: "greeter", Index: 5}, time.Minute); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait on an ended context = %v, want context.Canceled", err)
	}
}
