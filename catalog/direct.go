package catalog

import (
	"context"
	"sync"

	"github.com/lbctl/lbctl/internal/view"
)

// DefaultDirectLimit is the most queries Run watches with a blocking query
// each (see Watcher.DirectLimit).
const DefaultDirectLimit = 64

// directEvent is one query's news in direct mode: an answer, or a failure.
type directEvent struct {
	q         Query
	instances []Instance
	index     uint64
	err       error
}

// runDirect is Run with one blocking query per query, as lbctl watched
// before the change feeds: a change reaches the snapshot in one round trip
// (the blocking answer carries the instances), where the feeds need two or
// three (a feed's answer, a probe on a sweep, then the fetch). It holds a
// connection per query, so it is only for a few (DirectLimit). Each query's
// index is that of the answer its instances came in, as in feed mode.
func (w *Watcher) runDirect(ctx context.Context, out chan Snapshot) error {
	ctx, cancel := context.WithCancel(ctx)
	var queries sync.WaitGroup
	defer queries.Wait() // no query outlives Run
	defer cancel()
	kept := w.takeKept()
	events := make(chan directEvent)
	for _, q := range w.queries {
		queries.Go(func() { w.watchDirect(ctx, q, kept[q].index, events) })
	}
	current := make(map[Query]answer, len(w.queries))
	for q, a := range kept {
		current[q] = a
	}
	failing := map[Query]bool{}
	var reported Waiting
	changed := len(current) > 0
	for {
		wt := Waiting{Queries: len(w.queries), Unanswered: len(w.queries) - len(current), Failing: len(failing), Concurrency: len(w.queries)}
		if wt != reported && w.OnWaiting != nil {
			w.OnWaiting(wt)
		}
		reported = wt
		if changed && len(current) == len(w.queries) {
			changed = false
			if err := w.send(ctx, out, snapshotOf(current)); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev := <-events:
			if ev.err != nil {
				failing[ev.q] = true
				continue
			}
			delete(failing, ev.q)
			current[ev.q] = answer{ev.instances, ev.index}
			changed = true
		}
	}
}

// watchDirect runs blocking queries for q until ctx ends (package view has
// the index rules), from index (a kept answer's; 0: none), and tells events
// every new answer and every failure.
func (w *Watcher) watchDirect(ctx context.Context, q Query, index uint64, events chan<- directEvent) {
	send := func(ev directEvent) error { return sendOrDone(ctx, events, ev) }
	v := view.New(func(ctx context.Context, idx uint64) ([]Instance, uint64, error) {
		return w.src.fetch(ctx, q, idx)
	}, Equal)
	// Wait from the kept answer's index, which the snapshot already shows,
	// instead of fetching it again, and go on waiting from it when Consul
	// fails: an answer from before it (a server that has just restarted,
	// still applying its log) is then never taken for news.
	v.From = index
	v.Confirm = func(ctx context.Context) ([]Instance, uint64, error) {
		w.log.Info("consul answered from before the data held; asking again with a consistent read", "query", q.String())
		return w.src.fetchConsistent(ctx, q)
	}
	// Same instances at a newer index (an instance that was already out
	// went into maintenance, say) are still sent, so load balancers can
	// confirm they serve this index (package lbstate).
	v.IndexOnly = true
	v.MinGap, v.MinBackoff, v.MaxBackoff = w.MinGap, w.MinBackoff, w.MaxBackoff
	v.OnError = func(err error, failures int) {
		if w.OnError != nil {
			w.OnError(q, err)
		}
		if failures == 1 || failures%10 == 0 {
			w.log.Warn("consul query failed; keeping the last good data", "query", q.String(), "failures", failures, "err", err)
		}
		send(directEvent{q: q, err: err})
	}
	v.Run(ctx, func(instances []Instance, idx uint64) error {
		return send(directEvent{q: q, instances: instances, index: idx})
	})
}

// snapshotOf is a snapshot of every query's current answer.
func snapshotOf(current map[Query]answer) Snapshot {
	s := Snapshot{Instances: make(map[Query][]Instance, len(current)), Indexes: make(map[Query]uint64, len(current))}
	for q, a := range current {
		s.Instances[q] = a.instances
		s.Indexes[q] = a.index
		s.Index = max(s.Index, a.index)
	}
	return s
}
