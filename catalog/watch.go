package catalog

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/lbctl/lbctl/internal/backoff"
	"github.com/lbctl/lbctl/internal/latest"
)

// Watcher runs one blocking health query per Query and sends a Snapshot on
// every change, once all queries have answered.
type Watcher struct {
	client  *api.Client
	queries []Query
	log     *slog.Logger
	// OnError is called for every failed Consul request (for metrics); may be nil.
	OnError func(q Query, err error)
	// WaitTime is how long one blocking query may hang in Consul.
	WaitTime time.Duration
	// Backoff bounds the retry delay after errors.
	MinBackoff, MaxBackoff time.Duration
}

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
	return &Watcher{
		client: client, queries: uniq, log: log.With("component", "catalog"),
		WaitTime: 5 * time.Minute, MinBackoff: 50 * time.Millisecond, MaxBackoff: 5 * time.Second,
	}
}

// result is one query's newest answer.
type result struct {
	query     Query
	instances []Instance
	index     uint64
}

// Run watches until ctx ends. It sends a Snapshot on out after every change;
// a slow reader only ever misses intermediate states, never the newest one,
// because out is written with "latest wins" semantics when it has capacity 1.
func (w *Watcher) Run(ctx context.Context, out chan Snapshot) error {
	if len(w.queries) == 0 {
		return latest.Send(ctx, out, Snapshot{Instances: map[Query][]Instance{}, Indexes: map[Query]uint64{}})
	}
	results := make(chan result)
	for _, q := range w.queries {
		go w.watchQuery(ctx, q, results)
	}
	current := map[Query]result{}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case r := <-results:
			current[r.query] = r
			if len(current) < len(w.queries) {
				continue
			}
			if err := latest.Send(ctx, out, snapshotOf(current)); err != nil {
				return err
			}
		}
	}
}

// Once waits for the first complete snapshot. When ctx ends first, the error
// says why Consul did not answer (the last error seen), never "no instances".
func (w *Watcher) Once(ctx context.Context) (Snapshot, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var lastErr atomic.Pointer[error]
	once := *w
	once.OnError = func(q Query, err error) {
		lastErr.Store(&err)
		if w.OnError != nil {
			w.OnError(q, err)
		}
	}
	out := make(chan Snapshot, 1)
	go once.Run(ctx, out)
	select {
	case s := <-out:
		return s, nil
	case <-ctx.Done():
		if err := lastErr.Load(); err != nil {
			return Snapshot{}, fmt.Errorf("consul did not answer: %w", *err)
		}
		return Snapshot{}, fmt.Errorf("consul did not answer: %w", ctx.Err())
	}
}

func snapshotOf(current map[Query]result) Snapshot {
	s := Snapshot{Instances: make(map[Query][]Instance, len(current)), Indexes: make(map[Query]uint64, len(current))}
	for q, r := range current {
		s.Instances[q] = r.instances
		s.Indexes[q] = r.index
		s.Index = max(s.Index, r.index)
	}
	return s
}

// watchQuery runs blocking queries for q until ctx ends, sending a result
// whenever the instances change. Same index back means nothing happened; an
// index that goes backwards resets to 0 (Consul's rules for blocking queries).
func (w *Watcher) watchQuery(ctx context.Context, q Query, results chan<- result) {
	var (
		index    uint64
		lastSent uint64
		last     []Instance
		sent     bool
		failures int
	)
	for ctx.Err() == nil {
		instances, meta, err := w.fetch(ctx, q, index)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			w.reportError(q, err, failures)
			if !backoff.Sleep(ctx, backoff.Delay(failures, w.MinBackoff, w.MaxBackoff, nil)) {
				return
			}
			continue
		}
		failures = 0
		switch {
		case meta.LastIndex < index:
			index = 0
		default:
			index = meta.LastIndex
		}
		if sent && Equal(instances, last) {
			if meta.LastIndex == lastSent {
				continue // same answer again: nothing happened
			}
			// Same instances at a newer index (an instance that was already
			// out went into maintenance, say): still sent, so load balancers
			// can confirm they serve this index (package lbstate). Reusing the
			// old slice keeps it cheap downstream.
			instances = last
		}
		last, sent, lastSent = instances, true, meta.LastIndex
		select {
		case results <- result{query: q, instances: instances, index: meta.LastIndex}:
		case <-ctx.Done():
			return
		}
	}
}

func (w *Watcher) fetch(ctx context.Context, q Query, index uint64) ([]Instance, *api.QueryMeta, error) {
	opts := (&api.QueryOptions{WaitIndex: index, WaitTime: w.WaitTime, Datacenter: q.Datacenter}).WithContext(ctx)
	entries, meta, err := w.client.Health().Service(q.Service, q.Tag, true, opts)
	if err != nil {
		return nil, nil, fmt.Errorf("health of %s: %w", q, err)
	}
	instances := make([]Instance, 0, len(entries))
	for _, e := range entries {
		instances = append(instances, instanceOf(e))
	}
	SortInstances(instances)
	return instances, meta, nil
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

func (w *Watcher) reportError(q Query, err error, failures int) {
	if w.OnError != nil {
		w.OnError(q, err)
	}
	// The first failure and then every tenth: enough to see, not a flood.
	if failures == 1 || failures%10 == 0 {
		w.log.Warn("consul query failed; keeping the last good data", "query", q.String(), "failures", failures, "err", err)
	}
}
