package catalog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/consul/api"
)

func TestChangedServices(t *testing.T) {
	row := func(svc, status string, idx uint64) checkRow {
		return checkRow{Service: svc, Status: status, ModifyIndex: idx}
	}
	prev := map[checkKey]checkRow{
		{"n1", "service:a1"}:        row("a", "critical", 5),
		{"n1", "service:b1"}:        row("b", "critical", 6),
		{"n2", "service:c1"}:        row("c", "warning", 7),
		{"n2", "_node_maintenance"}: row("", "critical", 8),
	}
	cases := []struct {
		name     string
		next     map[checkKey]checkRow
		services []string
		node     bool
	}{
		{"nothing changed", prev, nil, false},
		{"a check went passing (gone), one went critical (new), one changed status", map[checkKey]checkRow{
			{"n1", "service:b1"}:        row("b", "warning", 9),
			{"n2", "service:c1"}:        row("c", "warning", 7),
			{"n3", "service:d1"}:        row("d", "critical", 10),
			{"n2", "_node_maintenance"}: row("", "critical", 8),
		}, []string{"a", "b", "d"}, false},
		{"a node's check went", map[checkKey]checkRow{
			{"n1", "service:a1"}: row("a", "critical", 5),
			{"n1", "service:b1"}: row("b", "critical", 6),
			{"n2", "service:c1"}: row("c", "warning", 7),
		}, nil, true},
		{"a check moved to another service", map[checkKey]checkRow{
			{"n1", "service:a1"}:        row("e", "critical", 11),
			{"n1", "service:b1"}:        row("b", "critical", 6),
			{"n2", "service:c1"}:        row("c", "warning", 7),
			{"n2", "_node_maintenance"}: row("", "critical", 8),
		}, []string{"a", "e"}, false},
	}
	for _, c := range cases {
		services, node := changedServices(prev, c.next)
		if !slices.Equal(services, c.services) || node != c.node {
			t.Errorf("%s: services %v node %v, want %v %v", c.name, services, node, c.services, c.node)
		}
	}
}

// fakeConsul is a source over an in-memory catalog: per service, its
// instances and index. Every request is counted, and the number running at
// once is tracked.
type fakeConsul struct {
	mu        sync.Mutex
	data      map[string][]Instance
	index     map[string]uint64
	fetches   map[string]int
	probes    int
	running   int
	maxRun    int
	refuse    int           // the next refuse requests get 429
	hold      time.Duration // how long a request takes
	checks    chan []string // the checks feed names these services, pushed by the test
	sweeps    chan struct{} // the services feed moves
	feedIndex uint64
	moved     chan struct{} // closed (and replaced) by every change
	// down: every request fails, as with the agent stopped; failed counts them.
	down   bool
	failed int
	// past: the server answers default-mode reads from its past, an empty
	// catalog at index 1, as a Consul server just elected leader does while
	// it applies its raft log; consistent reads fail until it is done.
	past       bool
	askedPast  map[string]bool // the services fetched while past
	consistent map[string]int  // consistent fetches answered, by service
}

func newFake(n int) *fakeConsul {
	f := &fakeConsul{data: map[string][]Instance{}, index: map[string]uint64{}, fetches: map[string]int{},
		hold: time.Millisecond, checks: make(chan []string), sweeps: make(chan struct{}), moved: make(chan struct{}),
		askedPast: map[string]bool{}, consistent: map[string]int{}}
	for i := range n {
		name := fmt.Sprintf("s%03d", i)
		f.data[name] = []Instance{{ID: name + "-1", Node: "n1", Address: "10.0.0.1", Port: 1000 + i}}
		f.index[name] = uint64(10 + i)
	}
	return f
}

// request is one request's bookkeeping; it takes f.hold (the bubble's
// clock), or until ctx ends, as a real request would.
func (f *fakeConsul) request(ctx context.Context) (func(), error) {
	f.mu.Lock()
	if f.down {
		f.failed++
		f.mu.Unlock()
		return nil, errors.New("connect: connection refused")
	}
	if f.refuse > 0 {
		f.refuse--
		f.mu.Unlock()
		return nil, api.StatusError{Code: 429, Body: "Your IP is issuing too many concurrent connections"}
	}
	f.running++
	f.maxRun = max(f.maxRun, f.running)
	f.mu.Unlock()
	done := func() { f.mu.Lock(); f.running--; f.mu.Unlock() }
	select {
	case <-time.After(f.hold):
	case <-ctx.Done():
		done()
		return nil, ctx.Err()
	}
	return done, nil
}

// serve starts one request (see request) and holds f.mu; end ends both.
func (f *fakeConsul) serve(ctx context.Context) (end func(), err error) {
	done, err := f.request(ctx)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	return func() { f.mu.Unlock(); done() }, nil
}

func (f *fakeConsul) fetch(ctx context.Context, q Query, index uint64) ([]Instance, uint64, error) {
	end, err := f.serve(ctx)
	if err != nil {
		return nil, 0, err
	}
	defer end()
	if f.past {
		f.askedPast[q.Service] = true
	}
	for index != 0 && f.indexOf(q.Service) <= index { // a blocking query: wait for a change
		moved := f.moved
		f.mu.Unlock()
		select {
		case <-moved:
		case <-ctx.Done():
			f.mu.Lock()
			return nil, 0, ctx.Err()
		}
		f.mu.Lock()
	}
	f.fetches[q.Service]++
	if f.past {
		return nil, 1, nil
	}
	return f.data[q.Service], f.index[q.Service], nil
}

// indexOf is the index a default-mode read of name answers with (f.mu held).
func (f *fakeConsul) indexOf(name string) uint64 {
	if f.past {
		return 1
	}
	return f.index[name]
}

func (f *fakeConsul) fetchConsistent(ctx context.Context, q Query) ([]Instance, uint64, error) {
	end, err := f.serve(ctx)
	if err != nil {
		return nil, 0, err
	}
	defer end()
	if f.past {
		return nil, 0, errors.New("Unexpected response code: 500 (Not ready to serve consistent reads)")
	}
	f.consistent[q.Service]++
	return f.data[q.Service], f.index[q.Service], nil
}

// set changes f's state under its lock and wakes the blocking queries.
func (f *fakeConsul) set(change func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	change()
	close(f.moved)
	f.moved = make(chan struct{})
}

func (f *fakeConsul) probe(ctx context.Context, q Query) (uint64, error) {
	end, err := f.serve(ctx)
	if err != nil {
		return 0, err
	}
	defer end()
	f.probes++
	return f.indexOf(q.Service), nil
}

// The critical checks feed names the services the test pushes; the warning
// checks feed never moves; the services feed moves when the test pushes a
// sweep. Each feed answers its first request at once.
func (f *fakeConsul) checksIn(ctx context.Context, dc, state string, index uint64) (map[checkKey]checkRow, uint64, error) {
	if index == 0 {
		return map[checkKey]checkRow{}, 1, nil
	}
	checks := f.checks
	if state != api.HealthCritical {
		checks = nil
	}
	select {
	case services := <-checks:
		rows := map[checkKey]checkRow{}
		for _, s := range services {
			rows[checkKey{"n1", s}] = checkRow{Service: s, Status: "critical", ModifyIndex: index + 1}
		}
		return rows, index + 1, nil
	case <-ctx.Done():
		return nil, 0, ctx.Err()
	}
}

func (f *fakeConsul) services(ctx context.Context, dc string, index uint64) (uint64, error) {
	if index == 0 {
		return 1, nil
	}
	select {
	case <-f.sweeps:
		return index + 1, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// change gives service name new instances at a new index.
// waitFor waits, inside a synctest bubble, until cond (called with f.mu
// held) holds, failing after a second of the bubble's clock: each round
// lets every goroutine run until it blocks, then advances the clock to the
// next timer.
func (f *fakeConsul) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(time.Second)
	for {
		synctest.Wait()
		f.mu.Lock()
		ok := cond()
		f.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-deadline:
			t.Fatalf("waiting for %s: gave up after 1s of the bubble's clock", what)
		case <-time.After(time.Millisecond):
		}
	}
}

func (f *fakeConsul) change(name string, port int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.data[name] = []Instance{{ID: name + "-1", Node: "n1", Address: "10.0.0.1", Port: port}}
	f.index[name] += 1000
	close(f.moved)
	f.moved = make(chan struct{})
}

// runFake runs w on a fake; stop ends Run and returns what it returned.
func runFake(t *testing.T, w *Watcher) (out chan Snapshot, stop func() error) {
	ctx, cancel := context.WithCancel(t.Context())
	out = make(chan Snapshot, 1)
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, out) }()
	var once sync.Once
	var err error
	stop = func() error { once.Do(func() { cancel(); err = <-done }); return err }
	t.Cleanup(func() { stop() })
	return out, stop
}

// onceDirect is a watcher of n queries on a fake, direct up to n (a
// blocking query each), after a Once.
func onceDirect(t *testing.T, n int) (*fakeConsul, *Watcher) {
	t.Helper()
	f := newFake(n)
	w := fakeWatcher(f, n)
	w.DirectLimit = n
	if _, err := w.Once(t.Context()); err != nil {
		t.Fatal(err)
	}
	return f, w
}

func fakeWatcher(f *fakeConsul, n int) *Watcher {
	var qs []Query
	for i := range n {
		qs = append(qs, Query{Service: fmt.Sprintf("s%03d", i)})
	}
	w := NewWatcher(nil, qs, slog.New(slog.DiscardHandler))
	w.src = f
	w.DirectLimit = 0 // the feeds, however few the queries
	return w
}

// Once fetches every query with at most Concurrency requests at once; a 429
// halves the concurrency, the refused query is retried, and nothing is lost.
func TestOnceBoundsConcurrencyAndBacksOffOn429(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(300)
		f.refuse = 3
		w := fakeWatcher(f, 300)
		var waits []Waiting
		w.OnWaiting = func(wt Waiting) { waits = append(waits, wt) }
		var errs int
		w.OnError = func(Query, error) { errs++ }
		snap, err := w.Once(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if len(snap.Instances) != 300 || snap.Indexes[Query{Service: "s007"}] != 17 {
			t.Fatalf("%d queries, s007 at %d; want 300, 17", len(snap.Instances), snap.Indexes[Query{Service: "s007"}])
		}
		if f.maxRun > DefaultConcurrency {
			t.Errorf("%d requests at once, want at most %d", f.maxRun, DefaultConcurrency)
		}
		if errs != 3 {
			t.Errorf("OnError heard %d failures, want 3", errs)
		}
		minConc, sawLimited := DefaultConcurrency, false
		for _, wt := range waits {
			minConc = min(minConc, wt.Concurrency)
			sawLimited = sawLimited || wt.RateLimited > 0
		}
		if minConc != 1 || !sawLimited {
			t.Errorf("concurrency went down to %d, rate-limited seen %v; want 1 and true", minConc, sawLimited)
		}
		if last := waits[len(waits)-1]; last.Total() != 0 || last.Unanswered != 0 {
			t.Errorf("last waiting report %+v, want nothing waiting", last)
		}
	})
}

// Once that cannot finish says how many queries are missing and why.
func TestOnceSaysWhatIsMissing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(10)
		f.refuse = 1 << 30
		w := fakeWatcher(f, 10)
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		_, err := w.Once(ctx)
		want := "consul did not answer 10 of 10 queries (6 waiting for a free request, 4 refused with 429, 0 failing): Unexpected response code: 429 (Your IP is issuing too many concurrent connections)"
		if err == nil || err.Error() != want {
			t.Fatalf("err = %v\nwant %s", err, want)
		}
	})
}

// Run fetches a service the checks feed names, probes every query on a
// sweep (fetching only those whose index moved), and publishes with each
// query the index of the answer its instances came in.
func TestRunFollowsTheFeeds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(50)
		w := fakeWatcher(f, 50)
		out, stop := runFake(t, w)
		first := <-out
		if len(first.Instances) != 50 {
			t.Fatalf("first snapshot has %d queries, want 50", len(first.Instances))
		}
		q := Query{Service: "s004"}
		f.change("s004", 9999)
		f.checks <- []string{"s004"}
		synctest.Wait()
		s := <-out
		if in := s.Instances[q]; len(in) != 1 || in[0].Port != 9999 || s.Indexes[q] != 1014 {
			t.Fatalf("s004 = %+v at %d, want port 9999 at 1014", in, s.Indexes[q])
		}
		if f.fetches["s004"] != 2 || f.fetches["s005"] != 1 {
			t.Errorf("fetches s004 %d s005 %d, want 2 and 1", f.fetches["s004"], f.fetches["s005"])
		}

		// A sweep: one probe per query, a fetch only for the one that moved.
		f.change("s030", 7777)
		f.sweeps <- struct{}{}
		synctest.Wait()
		s = <-out
		if in := s.Instances[Query{Service: "s030"}]; in[0].Port != 7777 {
			t.Fatalf("s030 = %+v after the sweep, want port 7777", in)
		}
		// 50 probes at ProbeRate 2000/s, 1ms each: well within a second of
		// the bubble's clock, which takes no real time.
		f.waitFor(t, "the sweep's 50 probes", func() bool { return f.probes >= 50 })
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.probes != 50 || f.fetches["s030"] != 2 || f.fetches["s031"] != 1 {
			t.Errorf("probes %d, fetches s030 %d s031 %d; want 50, 2, 1", f.probes, f.fetches["s030"], f.fetches["s031"])
		}
		if err := stop(); !errors.Is(err, context.Canceled) {
			t.Fatalf("Run = %v", err)
		}
	})
}

// A Once cut short keeps what it got: the next Once probes those answers and
// fetches only the rest (and a query whose index moved), and Run after it
// starts from its answers, probing instead of fetching every query again.
func TestOnceKeepsItsAnswersForTheNextOnceAndRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(300)
		w := fakeWatcher(f, 300)
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Millisecond) // 300 fetches, 4 at a time, 1ms each: 75ms
		_, err := w.Once(ctx)
		cancel()
		if err == nil {
			t.Fatal("Once in 30ms of 75ms of requests succeeded")
		}
		f.mu.Lock()
		first := 0
		for _, n := range f.fetches {
			first += n
		}
		f.mu.Unlock()
		kept := len(w.kept) // requests cut short by the timeout are not kept
		if kept == 0 || kept >= 300 || first-kept > DefaultConcurrency {
			t.Fatalf("first Once fetched %d queries and kept %d, want some but not all kept", first, kept)
		}
		f.change("s000", 4242) // answered by the first Once, changed since
		snap, err := w.Once(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if in := snap.Instances[Query{Service: "s000"}]; in[0].Port != 4242 || snap.Indexes[Query{Service: "s000"}] != 1010 {
			t.Errorf("s000 = %+v at %d, want the change (port 4242 at 1010)", in, snap.Indexes[Query{Service: "s000"}])
		}
		f.mu.Lock()
		fetched := 0
		for _, n := range f.fetches {
			fetched += n
		}
		if want := first + (300 - kept) + 1; fetched != want || f.probes != kept {
			t.Errorf("%d fetches and %d probes in all, want %d (the ones not kept, and s000 again) and %d", fetched, f.probes, want, kept)
		}
		f.mu.Unlock()

		ctx, cancel = context.WithCancel(t.Context())
		defer cancel()
		out := make(chan Snapshot, 1)
		go w.Run(ctx, out)
		<-out
		f.waitFor(t, "Run's 300 probes", func() bool { return f.probes >= kept+300 })
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.fetches["s250"] != 1 || f.probes != kept+300 {
			t.Errorf("after Run: s250 fetched %d times, %d probes; want 1 and %d", f.fetches["s250"], f.probes, kept+300)
		}
	})
}

// Up to DirectLimit queries, Run holds a blocking query per query: a change
// is in the next snapshot with the index of the answer it came in, with no
// feed and no probe, and a Once before it is not fetched again.
func TestRunDirectBlocksOnEveryQuery(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f, w := onceDirect(t, 10)
		out, stop := runFake(t, w)
		if first := <-out; len(first.Instances) != 10 || first.Indexes[Query{Service: "s003"}] != 13 {
			t.Fatalf("first snapshot: %d queries, s003 at %d; want 10 and 13", len(first.Instances), first.Indexes[Query{Service: "s003"}])
		}
		synctest.Wait() // every query blocks in Consul now
		f.change("s003", 3333)
		synctest.Wait()
		s := <-out
		if in := s.Instances[Query{Service: "s003"}]; in[0].Port != 3333 || s.Indexes[Query{Service: "s003"}] != 1013 {
			t.Fatalf("s003 = %+v at %d, want port 3333 at 1013", in, s.Indexes[Query{Service: "s003"}])
		}
		f.mu.Lock()
		if f.fetches["s003"] != 2 || f.fetches["s004"] != 1 || f.probes != 0 {
			t.Errorf("fetches s003 %d s004 %d, probes %d; want 2 (Once, the change), 1 (Once) and 0", f.fetches["s003"], f.fetches["s004"], f.probes)
		}
		f.mu.Unlock()
		if err := stop(); !errors.Is(err, context.Canceled) {
			t.Fatalf("Run = %v", err)
		}
	})
}
