package catalog

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/hashicorp/consul/api"
)

// source is every request the watcher makes to Consul. consulSource is the
// real one; tests of the scheduling logic give a fake.
type source interface {
	// fetch asks for q's passing instances: the instances, sorted, and the
	// answer's index. With index 0 it answers at once; otherwise it is a
	// blocking query that answers once q's index passes index (or the wait
	// time ends).
	fetch(ctx context.Context, q Query, index uint64) ([]Instance, uint64, error)
	// fetchConsistent is fetch at once, with a read that Consul answers only
	// from a leader that has applied its whole raft log (?consistent). It is
	// what the watcher asks when an answer's index went below the one it
	// holds, to tell a server answering from its past from a cluster reset.
	fetchConsistent(ctx context.Context, q Query) ([]Instance, uint64, error)
	// probe asks q's health query with a filter that matches nothing: the
	// answer is "[]" and its index is the query's index (Consul filters
	// after it has read the data). A probe tells whether q changed since an
	// index, for the price of a few bytes; its index is never published,
	// because no data came with it.
	probe(ctx context.Context, q Query) (uint64, error)
	// checksIn is a checks feed: a blocking query on every check of
	// datacenter dc in state (critical or warning), keyed by node and check ID.
	checksIn(ctx context.Context, dc, state string, index uint64) (map[checkKey]checkRow, uint64, error)
	// services is the registrations feed: a blocking query on the catalog's
	// service table, filtered to nothing; only its index matters.
	services(ctx context.Context, dc string, index uint64) (uint64, error)
}

// consulSource is source through a consul/api client.
type consulSource struct {
	client   *api.Client
	waitTime time.Duration // the feeds' blocking wait
}

// The services feed's and probes' filters. Consul applies a filter after it
// has read the data, so a filtered answer carries the unfiltered index.
// Service IDs and names cannot hold a NUL byte: those filters match nothing.
// The checks feeds have none: /v1/health/state/<state> reads only the checks
// in that state (Consul's status index), where a filter on /state/any was
// evaluated over every check on every wake (14-17 ms at 10,000 checks,
// against 0.3-0.8 ms for /state/critical and /state/warning).
const (
	probeFilter    = `Service.ID == "\u0000"`
	servicesFilter = `ServiceName == "\u0000"`
)

func (s consulSource) fetch(ctx context.Context, q Query, index uint64) ([]Instance, uint64, error) {
	opts := &api.QueryOptions{Datacenter: q.Datacenter}
	if index > 0 {
		opts.WaitIndex, opts.WaitTime = index, s.waitTime
	}
	return s.health(ctx, q, opts)
}

func (s consulSource) fetchConsistent(ctx context.Context, q Query) ([]Instance, uint64, error) {
	return s.health(ctx, q, &api.QueryOptions{Datacenter: q.Datacenter, RequireConsistent: true})
}

// health asks for q's passing instances with opts.
func (s consulSource) health(ctx context.Context, q Query, opts *api.QueryOptions) ([]Instance, uint64, error) {
	opts = opts.WithContext(ctx)
	entries, meta, err := s.client.Health().Service(q.Service, q.Tag, true, opts)
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

func (s consulSource) probe(ctx context.Context, q Query) (uint64, error) {
	opts := (&api.QueryOptions{Datacenter: q.Datacenter, Filter: probeFilter}).WithContext(ctx)
	_, meta, err := s.client.Health().Service(q.Service, q.Tag, true, opts)
	if err != nil {
		return 0, fmt.Errorf("index of %s: %w", q, err)
	}
	return meta.LastIndex, nil
}

func (s consulSource) checksIn(ctx context.Context, dc, state string, index uint64) (map[checkKey]checkRow, uint64, error) {
	opts := (&api.QueryOptions{Datacenter: dc, WaitIndex: index, WaitTime: s.waitTime}).WithContext(ctx)
	checks, meta, err := s.client.Health().State(state, opts)
	if err != nil {
		return nil, 0, fmt.Errorf("checks %s%s: %w", state, inDC(dc), err)
	}
	rows := make(map[checkKey]checkRow, len(checks))
	for _, c := range checks {
		rows[checkKey{Node: c.Node, CheckID: c.CheckID}] = checkRow{Service: c.ServiceName, Status: c.Status, ModifyIndex: c.ModifyIndex}
	}
	return rows, meta.LastIndex, nil
}

func (s consulSource) services(ctx context.Context, dc string, index uint64) (uint64, error) {
	opts := (&api.QueryOptions{Datacenter: dc, WaitIndex: index, WaitTime: s.waitTime, Filter: servicesFilter}).WithContext(ctx)
	_, meta, err := s.client.Catalog().Services(opts)
	if err != nil {
		return 0, fmt.Errorf("catalog services%s: %w", inDC(dc), err)
	}
	return meta.LastIndex, nil
}

func inDC(dc string) string {
	if dc == "" {
		return ""
	}
	return " in " + dc
}

// rateLimited says whether err is the agent refusing a connection because
// this address holds too many (limits.http_max_conns_per_client, 200 by
// default) or because of its request rate limit.
func rateLimited(err error) bool {
	var se api.StatusError
	return errors.As(err, &se) && se.Code == http.StatusTooManyRequests
}
