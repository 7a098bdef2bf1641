package catalog

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/lbctl/lbctl/internal/latest"
	"github.com/lbctl/lbctl/internal/view"
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
	// MinGap is the least time between the starts of one query's requests.
	MinGap time.Duration
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
		WaitTime: 5 * time.Minute,
		MinGap:   view.DefaultMinGap, MinBackoff: view.DefaultMinBackoff, MaxBackoff: view.DefaultMaxBackoff,
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
	ctx, cancel := context.WithCancel(ctx)
	var queries sync.WaitGroup
	defer queries.Wait() // no query outlives Run
	defer cancel()
	results := make(chan result)
	for _, q := range w.queries {
		queries.Go(func() { w.watchQuery(ctx, q, results) })
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

// watchQuery runs blocking queries for q until ctx ends (package view has
// the index rules), sending a result whenever the instances change.
func (w *Watcher) watchQuery(ctx context.Context, q Query, results chan<- result) error {
	v := view.New(func(ctx context.Context, index uint64) ([]Instance, uint64, error) {
		return w.fetch(ctx, q, index)
	}, Equal)
	// Same instances at a newer index (an instance that was already out
	// went into maintenance, say) are still sent, so load balancers can
	// confirm they serve this index (package lbstate). The view hands on
	// the old slice, which keeps it cheap downstream.
	v.IndexOnly = true
	v.MinGap, v.MinBackoff, v.MaxBackoff = w.MinGap, w.MinBackoff, w.MaxBackoff
	v.OnError = func(err error, failures int) { w.reportError(q, err, failures) }
	return v.Run(ctx, func(instances []Instance, index uint64) error {
		select {
		case results <- result{query: q, instances: instances, index: index}:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
}

func (w *Watcher) fetch(ctx context.Context, q Query, index uint64) ([]Instance, uint64, error) {
	opts := (&api.QueryOptions{WaitIndex: index, WaitTime: w.WaitTime, Datacenter: q.Datacenter}).WithContext(ctx)
	entries, meta, err := w.client.Health().Service(q.Service, q.Tag, true, opts)
	if err != nil {
		return nil, 0, fmt.Errorf("health of %s: %w", q, err)
	}
	instances := make([]Instance, 0, len(entries))
	for _, e := range entries {
		instances = append(instances, instanceOf(e))
	}
	SortInstances(instances)
	return instances, meta.LastIndex, nil
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
