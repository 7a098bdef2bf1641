package catalog

import (
	"context"
	"maps"
	"slices"
	"sync"

	"github.com/hashicorp/consul/api"

	"github.com/lbctl/lbctl/internal/view"
)

// checkKey names one check: its node and check ID.
type checkKey struct{ Node, CheckID string }

// checkRow is what a checks feed keeps of a check in its state.
type checkRow struct {
	Service     string // empty for a node's own check
	Status      string
	ModifyIndex uint64
}

// changedServices compares two answers of a checks feed (the checks in its
// state): the services whose checks appeared, went or changed,
// sorted, and whether a node's own check did (that touches every service on
// the node, which the feed cannot name).
func changedServices(prev, next map[checkKey]checkRow) (services []string, node bool) {
	seen := map[string]bool{}
	mark := func(r checkRow) {
		if r.Service == "" {
			node = true
		} else if !seen[r.Service] {
			seen[r.Service] = true
			services = append(services, r.Service)
		}
	}
	for k, n := range next {
		if p, ok := prev[k]; !ok || p != n {
			mark(n)
			if ok && p.Service != n.Service {
				mark(p)
			}
		}
	}
	for k, p := range prev {
		if _, ok := next[k]; !ok {
			mark(p)
		}
	}
	slices.Sort(services)
	return services, node
}

// feedEvent is what a datacenter's feeds tell the scheduler.
type feedEvent struct {
	dc string
	// ready: the feed's first answer is in; changes after it will be told.
	ready bool
	// services changed (by name), per a checks feed.
	services []string
	// sweep: something changed that the feeds cannot name (a registration,
	// a node's check): every query of dc is probed.
	sweep bool
}

// checkStates are the states a check feed follows each: a check that is
// neither passing nor in one of these does not exist (Consul has no other).
var checkStates = []string{api.HealthCritical, api.HealthWarning}

// feedsPerDC is how many change feeds a datacenter has: a checks feed per
// state, and the services feed.
var feedsPerDC = len(checkStates) + 1

// runFeeds runs datacenter dc's change feeds until ctx ends, each one
// blocking query through package view, and tells events what they see.
func (w *Watcher) runFeeds(ctx context.Context, dc string, events chan<- feedEvent) {
	send := func(ev feedEvent) error { return sendOrDone(ctx, events, ev) }
	var feeds sync.WaitGroup
	defer feeds.Wait()
	for _, state := range checkStates {
		feeds.Go(func() { w.runChecksFeed(ctx, dc, state, send) })
	}
	feeds.Go(func() {
		// Every new index of the service table is a registration, a
		// deregistration or a changed instance somewhere: the answer does not
		// say where, so each is a sweep. nil equal: every new index is emitted.
		v := view.New(func(ctx context.Context, index uint64) (struct{}, uint64, error) {
			idx, err := w.src.services(ctx, dc, index)
			return struct{}{}, idx, err
		}, nil)
		tune(w, v, "services feed", dc)
		first := true
		v.Run(ctx, func(struct{}, uint64) error {
			ev := feedEvent{dc: dc, ready: first, sweep: !first}
			first = false
			return send(ev)
		})
	})
}

// runChecksFeed follows dc's checks in state: a check that enters it, leaves
// it or changes in it names its service (a node's own check: a sweep).
func (w *Watcher) runChecksFeed(ctx context.Context, dc, state string, send func(feedEvent) error) {
	v := view.New(func(ctx context.Context, index uint64) (map[checkKey]checkRow, uint64, error) {
		return w.src.checksIn(ctx, dc, state, index)
	}, maps.Equal)
	tune(w, v, state+" checks feed", dc)
	var prev map[checkKey]checkRow
	v.Run(ctx, func(rows map[checkKey]checkRow, _ uint64) error {
		if prev == nil {
			prev = rows
			return send(feedEvent{dc: dc, ready: true})
		}
		services, node := changedServices(prev, rows)
		prev = rows
		return send(feedEvent{dc: dc, services: services, sweep: node})
	})
}

// tune gives a feed's view the watcher's gap and backoff, and its errors to
// OnError and the log.
func tune[T any](w *Watcher, v *view.View[T], name, dc string) {
	v.MinGap, v.MinBackoff, v.MaxBackoff = w.MinGap, w.MinBackoff, w.MaxBackoff
	q := Query{Service: "(" + name + ")", Datacenter: dc}
	v.OnError = func(err error, failures int) {
		if w.OnError != nil {
			w.OnError(q, err)
		}
		if failures == 1 || failures%10 == 0 {
			w.log.Warn("consul change feed failed; services are not followed until it answers",
				"feed", name, "datacenter", dc, "failures", failures, "err", err)
		}
	}
}

// sendOrDone sends v on ch, or gives up with ctx's error when ctx ends first.
func sendOrDone[T any](ctx context.Context, ch chan<- T, v T) error {
	select {
	case ch <- v:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
