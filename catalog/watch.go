package catalog

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/lbctl/lbctl/internal/latest"
	"github.com/lbctl/lbctl/internal/view"
)

// Watcher follows the passing instances of a set of queries and sends a
// Snapshot on every change, once every query has answered. Up to
// DirectLimit queries, Run holds a blocking query per query; above, a few
// connections however many queries it watches (see the package doc): per
// datacenter, three blocking change feeds, plus at most Concurrency short
// requests at a time.
type Watcher struct {
	src     source
	queries []Query
	log     *slog.Logger
	// OnError is called for every failed Consul request (for metrics); may
	// be nil. A feed's failure names the feed as the query's Service.
	OnError func(q Query, err error)
	// OnWaiting, if set, hears how many queries wait for Consul, and why,
	// each time that changes. It is called from Run's goroutine: it must not block.
	OnWaiting func(Waiting)
	// OnSnapshot, if set, is handed every snapshot Run sends, just before it
	// is sent: another reader of the same watch (the access-log collector's
	// address directory), so no second watcher asks Consul the same queries.
	// It is called from Run's goroutine: it must not block, and must not
	// change the snapshot (the engine reads the same maps).
	OnSnapshot func(Snapshot)
	// WaitTime is how long one blocking feed query may hang in Consul.
	WaitTime time.Duration
	// MinGap is the least time between the starts of one feed's requests.
	MinGap time.Duration
	// Backoff bounds the retry delay after errors.
	MinBackoff, MaxBackoff time.Duration
	// Concurrency is the most requests for queries' instances (fetches and
	// probes) at once.
	Concurrency int
	// ProbeRate is how many probes a second a sweep sends at most (0: no limit).
	ProbeRate int
	// Reconcile is how often every query is probed when no feed said so: the
	// net under changes the feeds cannot see (see the package doc). 0: never.
	Reconcile time.Duration
	// DirectLimit: Run watches up to this many queries with a blocking query
	// each (a change costs one round trip, and a connection per query),
	// more with the change feeds (see the package doc).
	DirectLimit int

	// kept is what the last Once got, answered or not in the end: the next
	// Once or Run starts from these answers (probing them, fetching only
	// those whose index moved) instead of fetching every query again.
	mu   sync.Mutex
	kept map[Query]answer
}

// answer is one fetch's instances and the index of that very answer.
type answer struct {
	instances []Instance
	index     uint64
}

// Defaults that NewWatcher fills in.
const (
	DefaultConcurrency = 4
	DefaultProbeRate   = 2000
	DefaultReconcile   = 5 * time.Minute
)

// NewWatcher watches queries through client. Duplicate queries are watched once.
func NewWatcher(client *api.Client, queries []Query, log *slog.Logger) *Watcher {
	var uniq []Query
	seen := map[Query]bool{}
	for _, q := range queries {
		if !seen[q] {
			seen[q] = true
			uniq = append(uniq, q)
		}
	}
	w := &Watcher{
		queries: uniq, log: log.With("component", "catalog"),
		WaitTime: 5 * time.Minute,
		MinGap:   view.DefaultMinGap, MinBackoff: view.DefaultMinBackoff, MaxBackoff: view.DefaultMaxBackoff,
		Concurrency: DefaultConcurrency, ProbeRate: DefaultProbeRate, Reconcile: DefaultReconcile,
		DirectLimit: DefaultDirectLimit,
	}
	w.src = consulSource{client: client, waitTime: w.WaitTime}
	return w
}

// Run watches until ctx ends. It sends a Snapshot on out after every change;
// a slow reader only ever misses intermediate states, never the newest one,
// because out is written with "latest wins" semantics when it has capacity 1.
func (w *Watcher) Run(ctx context.Context, out chan Snapshot) error {
	if len(w.queries) == 0 {
		return w.send(ctx, out, Snapshot{Instances: map[Query][]Instance{}, Indexes: map[Query]uint64{}})
	}
	if cs, ok := w.src.(consulSource); ok {
		cs.waitTime = w.WaitTime // the field may have been set after NewWatcher
		w.src = cs
	}
	if len(w.queries) <= w.DirectLimit {
		return w.runDirect(ctx, out)
	}
	ctx, cancel := context.WithCancel(ctx)
	s := newScheduler(w, w.takeKept())
	var feeds sync.WaitGroup
	defer s.attempts.Wait() // no request outlives Run
	defer feeds.Wait()
	defer cancel()
	events := make(chan feedEvent)
	for dc := range s.byDC {
		feeds.Go(func() { w.runFeeds(ctx, dc, events) })
	}
	return w.loop(ctx, s, events, feedsPerDC*len(s.byDC), func(snap Snapshot) (bool, error) {
		return false, w.send(ctx, out, snap)
	})
}

// send hands snap to OnSnapshot, then to out (newest wins).
func (w *Watcher) send(ctx context.Context, out chan Snapshot, snap Snapshot) error {
	if w.OnSnapshot != nil {
		w.OnSnapshot(snap)
	}
	return latest.Send(ctx, out, snap)
}

// Once waits for the first complete snapshot: every query fetched once, no
// feed. When ctx ends first, the error says how many queries Consul left
// unanswered and why (the last error seen), never "no instances".
//
// What a Once got is kept, even when it fails: the next Once (a retry after
// a timeout) or Run starts from it, probing each kept answer's index and
// fetching only the queries that moved or were never answered. A thousand
// queries on a loaded agent can take longer than one attempt's timeout;
// each attempt then builds on the last instead of starting over.
func (w *Watcher) Once(ctx context.Context) (Snapshot, error) {
	if len(w.queries) == 0 {
		return Snapshot{Instances: map[Query][]Instance{}, Indexes: map[Query]uint64{}}, nil
	}
	ctx, cancel := context.WithCancel(ctx)
	s := newScheduler(w, w.takeKept())
	defer s.attempts.Wait()
	defer cancel()
	defer func() { w.keep(s) }()
	for _, qs := range s.states {
		s.want(qs, false) // a probe for a kept answer, a fetch for the rest
	}
	s.settle = true
	var snap Snapshot
	err := w.loop(ctx, s, nil, 0, func(got Snapshot) (bool, error) {
		snap = got
		return true, nil
	})
	if err == nil {
		return snap, nil
	}
	wt := s.waiting(0)
	cause := s.lastErr
	if cause == nil {
		cause = err
	}
	return Snapshot{}, fmt.Errorf("consul did not answer %d of %d queries (%d waiting for a free request, %d refused with 429, %d failing): %w",
		wt.Unanswered, wt.Queries, wt.Queued, wt.RateLimited, wt.Failing, cause)
}

// takeKept hands over what the last Once kept (nil if nothing).
func (w *Watcher) takeKept() map[Query]answer {
	w.mu.Lock()
	defer w.mu.Unlock()
	k := w.kept
	w.kept = nil
	return k
}

// keep keeps s's answers for the next Once or Run. Called once s's requests
// have ended.
func (w *Watcher) keep(s *scheduler) {
	k := map[Query]answer{}
	for _, qs := range s.states {
		if qs.answered {
			k[qs.q] = answer{qs.instances, qs.index}
		}
	}
	w.mu.Lock()
	w.kept = k
	w.mu.Unlock()
}

// loop is the scheduler's goroutine: it starts requests, applies their
// answers and the feeds' events, and hands emit a snapshot whenever an
// answer changed and every query has one. feeds is how many feeds have not
// answered yet; a datacenter's queries are first fetched once all of its
// feeds have, so that every change after the fetch is one the feeds report.
// loop returns ctx's error, emit's, or nil when emit says stop.
func (w *Watcher) loop(ctx context.Context, s *scheduler, events <-chan feedEvent, feeds int, emit func(Snapshot) (stop bool, err error)) error {
	ready := map[string]int{}
	var reconcile <-chan time.Time
	if w.Reconcile > 0 && events != nil {
		t := time.NewTicker(w.Reconcile)
		defer t.Stop()
		reconcile = t.C
	}
	probeTurn := time.NewTimer(time.Hour)
	defer probeTurn.Stop()
	var reported Waiting
	degraded := false
	lastLog := time.Time{}
	for {
		if wait := s.dispatch(ctx); wait > 0 {
			probeTurn.Reset(wait)
		}
		wt := s.waiting(feeds)
		if wt != reported && w.OnWaiting != nil {
			w.OnWaiting(wt)
		}
		reported = wt
		if wt.RateLimited+wt.Failing > 0 && time.Since(lastLog) >= 5*time.Second {
			lastLog, degraded = time.Now(), true
			w.logWaiting(wt, s.lastErr)
		} else if degraded && wt.Total() == 0 && wt.Unanswered == 0 {
			degraded = false
			w.log.Info("consul answers every query again", "queries", wt.Queries)
		}
		if s.changed && s.unanswered == 0 && (!s.settle || s.idle()) {
			s.changed = false
			if stop, err := emit(s.snapshot()); stop || err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case o := <-s.outcomes:
			s.handle(ctx, o)
			for more := true; more; { // apply every answer that is in before emitting
				select {
				case o := <-s.outcomes:
					s.handle(ctx, o)
				default:
					more = false
				}
			}
		case ev := <-events:
			switch {
			case ev.ready:
				feeds--
				if ready[ev.dc]++; ready[ev.dc] == feedsPerDC {
					// A probe for an answer a Once kept, a fetch for the rest.
					for _, qs := range s.byDC[ev.dc] {
						s.want(qs, false)
					}
				}
			case ready[ev.dc] < feedsPerDC:
				// Before every feed is in, no query was fetched: the
				// first fetch comes after every change told so far.
			default:
				s.named(ev.dc, ev.services)
				if ev.sweep {
					s.sweep(ev.dc)
				}
			}
		case <-probeTurn.C:
		case <-reconcile:
			for dc := range s.byDC {
				if ready[dc] == feedsPerDC {
					s.sweep(dc)
				}
			}
		}
	}
}

// logWaiting says, while Consul refuses or fails requests, how many queries
// wait and why: at most every 5 seconds, never a silent wait.
func (w *Watcher) logWaiting(wt Waiting, lastErr error) {
	msg := "consul requests failing; waiting queries keep their last good data"
	if wt.RateLimited > 0 {
		msg = "consul agent refuses requests: too many connections or requests from this address " +
			"(limits.http_max_conns_per_client); asking fewer at once, waiting queries keep their last good data"
	}
	w.log.Warn(msg, "queries", wt.Queries, "never_answered", wt.Unanswered, "queued", wt.Queued,
		"rate_limited", wt.RateLimited, "failing", wt.Failing, "concurrency", wt.Concurrency, "err", lastErr)
}

func instanceOf(e *api.ServiceEntry) Instance {
	in := Instance{}
	if e.Service != nil {
		in.ID, in.Address, in.Port = e.Service.ID, e.Service.Address, e.Service.Port
		in.Tags, in.Meta = e.Service.Tags, e.Service.Meta
	}
	if e.Node != nil {
		in.Node = e.Node.Node
		if in.Address == "" {
			in.Address = e.Node.Address
		}
	}
	return in
}
