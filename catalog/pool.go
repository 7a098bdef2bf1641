package catalog

import (
	"context"
	"sync"
	"time"

	"github.com/lbctl/lbctl/internal/backoff"
)

// Waiting is how many queries wait for Consul, and why. Nothing is rendered
// until Unanswered is 0; after that, a waiting query keeps its last answer.
type Waiting struct {
	Queries    int // queries watched
	Unanswered int // not answered even once yet
	// Feeds is how many change feeds have not answered yet; no query is
	// fetched in a datacenter until all of its feeds have.
	Feeds int
	// Queued need a request and wait for a free slot (or, probes, for their turn).
	Queued int
	// RateLimited: the query's last request was refused with 429 (too many
	// connections or requests from this address); it is retried after a backoff.
	RateLimited int
	// Failing: the query's last request failed otherwise; retried after a backoff.
	Failing int
	// Concurrency is how many requests for queries may run at once now: the
	// watcher's Concurrency, halved at each 429 and grown back one by one.
	Concurrency int
}

// Total is the number of queries waiting for any reason.
func (w Waiting) Total() int { return w.Queued + w.RateLimited + w.Failing }

// queryState is what the scheduler knows of one query.
type queryState struct {
	q         Query
	instances []Instance // the newest answer's (the slice is never changed once set)
	index     uint64     // ...and its X-Consul-Index
	answered  bool

	queued      bool    // in fetchQ or probeQ
	queuedProbe bool    // ...and the queued task is only a probe
	inFlight    bool    // a request for it runs (or waits out a backoff)
	again       bool    // a feed told of a change while it was in flight
	againFetch  bool    // ...and named it (not a sweep): fetch, do not probe
	behind      bool    // a fetch answered from before index: the next fetch is consistent (see handle)
	errKind     errKind // how its last request ended
	failures    int     // failed requests in a row
}

type errKind int

const (
	errNone errKind = iota
	errRateLimited
	errFailing
)

// task is one request to run: a fetch (a consistent one when the query is
// behind), or a probe of the query's index.
type task struct {
	qs         *queryState
	probe      bool
	consistent bool
}

// outcome is one attempt of a task.
type outcome struct {
	t         task
	instances []Instance
	index     uint64
	err       error
}

// serviceKey is a service in a datacenter: what a feed names.
type serviceKey struct{ dc, service string }

// scheduler decides which query to ask next and applies the answers. It is
// run by one goroutine (Watcher.loop); only attempt runs elsewhere.
type scheduler struct {
	w         *Watcher
	states    []*queryState
	byService map[serviceKey][]*queryState
	byDC      map[string][]*queryState

	fetchQ, probeQ []*queryState
	limit          int // requests allowed at once now
	running        int // tasks holding a slot
	okInRow        int
	probeEvery     time.Duration
	nextProbe      time.Time

	unanswered             int
	rateLimitedN, failingN int
	changed                bool // an answer changed since the last snapshot
	lastErr                error
	// settle: a snapshot waits until no request runs or waits (Once: the
	// probes of kept answers, and the fetches they ask for, are done).
	settle bool

	outcomes chan outcome
	attempts sync.WaitGroup
}

// newScheduler schedules w's queries, starting from the answers kept (see
// Watcher.Once): those count as answered, and the first snapshot may be
// theirs.
func newScheduler(w *Watcher, kept map[Query]answer) *scheduler {
	s := &scheduler{w: w, byService: map[serviceKey][]*queryState{}, byDC: map[string][]*queryState{},
		limit: max(1, w.Concurrency), outcomes: make(chan outcome)}
	if w.ProbeRate > 0 {
		s.probeEvery = time.Second / time.Duration(w.ProbeRate)
	}
	for _, q := range w.queries {
		qs := &queryState{q: q}
		if a, ok := kept[q]; ok {
			qs.instances, qs.index, qs.answered = a.instances, a.index, true
			s.changed = true
		}
		s.states = append(s.states, qs)
		k := serviceKey{q.Datacenter, q.Service}
		s.byService[k] = append(s.byService[k], qs)
		s.byDC[q.Datacenter] = append(s.byDC[q.Datacenter], qs)
	}
	for _, qs := range s.states {
		if !qs.answered {
			s.unanswered++
		}
	}
	return s
}

// idle says whether no request runs or waits for a slot.
func (s *scheduler) idle() bool {
	if s.running > 0 {
		return false
	}
	for _, qs := range s.states {
		if qs.queued || qs.inFlight {
			return false
		}
	}
	return true
}

// want asks for a request for qs: a fetch, or a probe (fetch false). A
// query already in flight is asked again once its answer is in: that answer
// may predate the change that asked.
func (s *scheduler) want(qs *queryState, fetch bool) {
	fetch = fetch || !qs.answered
	switch {
	case qs.inFlight:
		qs.again, qs.againFetch = true, qs.againFetch || fetch
	case qs.queued && qs.queuedProbe && fetch:
		qs.queuedProbe = false // the probe's entry in probeQ is skipped
		s.fetchQ = append(s.fetchQ, qs)
	case qs.queued:
	case fetch:
		qs.queued, qs.queuedProbe = true, false
		s.fetchQ = append(s.fetchQ, qs)
	default:
		qs.queued, qs.queuedProbe = true, true
		s.probeQ = append(s.probeQ, qs)
	}
}

// pop takes the next valid entry of q (entries left behind by want's
// upgrade of a probe to a fetch are skipped).
func pop(q *[]*queryState, probe bool) *queryState {
	for len(*q) > 0 {
		qs := (*q)[0]
		(*q)[0] = nil
		*q = (*q)[1:]
		if qs.queued && qs.queuedProbe == probe {
			return qs
		}
	}
	return nil
}

// dispatch starts queued tasks while slots are free: fetches first, probes
// no more often than ProbeRate. It returns how long until the next probe
// may start when one waits for its turn, else 0.
func (s *scheduler) dispatch(ctx context.Context) time.Duration {
	for s.running < s.limit {
		probe := false
		qs := pop(&s.fetchQ, false)
		if qs == nil {
			if len(s.probeQ) == 0 {
				return 0
			}
			now := time.Now()
			if wait := s.nextProbe.Sub(now); wait > 0 {
				return wait
			}
			if qs = pop(&s.probeQ, true); qs == nil {
				return 0
			}
			probe = true
			s.nextProbe = now.Add(s.probeEvery)
		}
		qs.queued, qs.inFlight = false, true
		s.running++
		s.start(ctx, task{qs: qs, probe: probe, consistent: !probe && qs.behind}, 0)
	}
	return 0
}

// start runs one attempt of t after delay, in a goroutine of its own.
func (s *scheduler) start(ctx context.Context, t task, delay time.Duration) {
	s.attempts.Go(func() {
		o := outcome{t: t}
		if !backoff.Sleep(ctx, delay) {
			return
		}
		switch {
		case t.probe:
			o.index, o.err = s.w.src.probe(ctx, t.qs.q)
		case t.consistent:
			o.instances, o.index, o.err = s.w.src.fetchConsistent(ctx, t.qs.q)
		default:
			o.instances, o.index, o.err = s.w.src.fetch(ctx, t.qs.q, 0)
		}
		if ctx.Err() != nil {
			return // a request cut short by the end of Run is no failure
		}
		select {
		case s.outcomes <- o:
		case <-ctx.Done():
		}
	})
}

// handle applies one attempt's outcome.
func (s *scheduler) handle(ctx context.Context, o outcome) {
	qs, t := o.t.qs, o.t
	if o.err != nil {
		qs.failures++
		s.lastErr, s.okInRow = o.err, 0
		qs.errKind = errFailing
		if rateLimited(o.err) {
			qs.errKind = errRateLimited
			s.limit = max(1, s.limit/2)
		}
		if s.w.OnError != nil {
			s.w.OnError(qs.q, o.err)
		}
		if s.running > s.limit {
			// Fewer requests at once now: this one gives its slot up and
			// queues again (its again flags stay).
			s.running--
			qs.inFlight = false
			s.want(qs, !t.probe)
			return
		}
		// Otherwise it keeps its slot while it backs off: failures slow the
		// watcher down instead of spreading to more requests.
		s.start(ctx, t, backoff.Delay(qs.failures, s.w.MinBackoff, s.w.MaxBackoff, nil))
		return
	}
	qs.errKind, qs.failures = errNone, 0
	s.running--
	qs.inFlight = false
	if s.okInRow++; s.okInRow >= 16 && s.limit < s.w.Concurrency {
		s.limit, s.okInRow = s.limit+1, 0
	}
	switch {
	case t.probe:
		if o.index != qs.index {
			s.want(qs, true)
		}
	case !t.consistent && qs.answered && o.index < qs.index:
		// An answer from before the one kept: a server answering from its
		// past (just elected, still applying its log) or a cluster reset.
		// A consistent read tells; until it does, the kept answer stays.
		s.w.log.Info("consul answered from before the data held; asking again with a consistent read",
			"query", qs.q.String(), "index", o.index, "held", qs.index)
		qs.behind = true
		s.want(qs, true)
	default:
		qs.behind = false
		s.apply(qs, o.instances, o.index)
	}
	if qs.again {
		fetch := qs.againFetch
		qs.again, qs.againFetch = false, false
		s.want(qs, fetch)
	}
}

// apply takes a fetch's answer. The index kept with the instances is the
// index of the very answer they came in: Snapshot.Indexes never says more
// than the instances show (docs/drain.md).
func (s *scheduler) apply(qs *queryState, instances []Instance, index uint64) {
	switch {
	case !qs.answered:
		qs.answered = true
		s.unanswered--
	case Equal(qs.instances, instances):
		if index == qs.index {
			return
		}
		// Same instances at a new index (an instance that was already out
		// went into maintenance, say): the new index is kept, so load
		// balancers can confirm it (package lbstate), with the old slice.
		instances = qs.instances
	}
	qs.instances, qs.index, s.changed = instances, index, true
}

// sweep probes every query of dc.
func (s *scheduler) sweep(dc string) {
	for _, qs := range s.byDC[dc] {
		s.want(qs, false)
	}
}

// named fetches the queries of the services a feed named.
func (s *scheduler) named(dc string, services []string) {
	for _, name := range services {
		for _, qs := range s.byService[serviceKey{dc, name}] {
			s.want(qs, true)
		}
	}
}

// waiting counts the queries waiting for Consul, each under one reason:
// its last request's failure, else being queued.
func (s *scheduler) waiting(feeds int) Waiting {
	wt := Waiting{Queries: len(s.states), Unanswered: s.unanswered, Feeds: feeds, Concurrency: s.limit}
	for _, qs := range s.states {
		switch {
		case qs.errKind == errRateLimited:
			wt.RateLimited++
		case qs.errKind == errFailing:
			wt.Failing++
		case qs.queued:
			wt.Queued++
		}
	}
	return wt
}

// snapshot is every query's newest answer, in fresh maps (the receiver keeps them).
func (s *scheduler) snapshot() Snapshot {
	snap := Snapshot{Instances: make(map[Query][]Instance, len(s.states)), Indexes: make(map[Query]uint64, len(s.states))}
	for _, qs := range s.states {
		snap.Instances[qs.q] = qs.instances
		snap.Indexes[qs.q] = qs.index
		snap.Index = max(snap.Index, qs.index)
	}
	return snap
}
