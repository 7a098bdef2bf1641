// Package catalog watches Consul's health data for the services lbctl renders
// and hands out typed, sorted snapshots. Everything in an Instance comes from
// whoever registered it: it is untrusted until the renderer has checked it.
//
// # How it watches a thousand services on a few connections
//
// A Consul agent allows 200 connections per client address by default
// (limits.http_max_conns_per_client), so one blocking query per service
// cannot scale. Per datacenter, the Watcher holds three blocking queries, the
// change feeds, and asks for instances with short, non-blocking requests, at
// most Concurrency (4) at a time:
//
//   - two checks feeds, GET /v1/health/state/critical and .../warning: the
//     checks that are not passing (few, in a healthy fleet). A check that
//     enters a state, leaves it or changes in it names its service, which is
//     fetched; a node's own check (no service) starts a sweep. Consul reads
//     these through its index on check status, so an answer costs it the few
//     checks in that state, not every check (a filter on /state/any cost
//     14-17 ms per answer at 10,000 checks, against 0.3-0.8 ms). Any check's
//     change still wakes both feeds (their index is the checks table's):
//     one more small request per change, an unchanged answer emits nothing.
//   - the services feed, GET /v1/catalog/services with a filter that matches
//     nothing: only its index matters, which moves with every registration,
//     deregistration or changed instance. The answer cannot say which
//     service, so each move starts a sweep.
//   - a sweep probes every query of the datacenter, at most ProbeRate a
//     second: GET /v1/health/service/<name> with a filter that matches
//     nothing answers "[]" with the query's own index (Consul filters after
//     it has read the data). Only queries whose index moved are fetched.
//   - every Reconcile (5 minutes) a sweep runs anyway: the net under changes
//     no feed sees (a node's address, a passing check removed on its own, a
//     check that failed and recovered between two answers of the feed).
//
// A datacenter's queries are first fetched once all its feeds have answered,
// so every change after a fetch is one the feeds report. A feed's answer
// that arrives while a query's request is in flight asks that query again
// once the request is done. When the agent answers 429 the watcher halves
// its concurrency (down to 1) and grows it back by one every 16 successes;
// Waiting (OnWaiting) and a log line every 5 seconds say how many queries
// wait and why.
//
// # A few services: a blocking query each
//
// The feeds cost round trips: a health change is a checks feed's answer,
// then a fetch; a registration is the services feed's answer, a probe, then
// a fetch. A blocking query per service answers with the instances at once.
// So up to DirectLimit (64) queries, far below the agent's 200 connections,
// Run holds one blocking query per query instead, as lbctl did before the
// feeds; above it, the feeds. Once is the same in both (short fetches,
// at most Concurrency at once), and so is what a snapshot's indexes mean.
//
// # Why the drain indexes stay right
//
// The drain protocol (docs/drain.md) needs, per query, the index of the
// answer nginx serves: a load balancer that reports index I for a query
// promises that what it renders for that query includes every change up to
// I. Snapshot.Indexes[q] is always the X-Consul-Index of the very answer
// whose instances are Snapshot.Instances[q] — one request, one read of the
// servers' state — exactly as with one blocking query per service. The
// feeds' and probes' indexes decide only what to fetch; they are never
// reported, because no instances came with them. So a missed or late feed
// event can only delay a query's index (a drain waits longer, up to its
// timeout), never make it claim data newer than was rendered. At most one
// request per query runs at a time, so a query's answers are applied in the
// order Consul gave them.
//
// # An answer from the past
//
// A Consul server just elected leader (after a restart, say) answers
// default-mode reads while it is still applying its raft log: for a moment
// it answers an older catalog, even an empty one at index 1. Taken, that
// renders instances long gone, or none, and nginx fails every call. So an
// answer whose index is below the one held for its query is never applied
// as it is: the query is asked again with a consistent read, which Consul
// answers only once its log is applied, and that answer is taken whatever
// its index (a cluster restored from an older snapshot did go back). Until
// it comes, the query keeps its answer. Blocking queries wait from the held
// index, also after a failure, so they are not answered from the past.
package catalog

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Query names one health query: the passing instances of Service, optionally
// only those tagged Tag, in Datacenter (empty: the agent's own).
type Query struct {
	Service    string
	Tag        string
	Datacenter string
}

func (q Query) String() string {
	s := q.Service
	if q.Tag != "" {
		s += "|" + q.Tag
	}
	if q.Datacenter != "" {
		s += "@" + q.Datacenter
	}
	return s
}

// Instance is one passing service instance, as registered (untrusted).
type Instance struct {
	ID      string
	Node    string
	Address string // the service address, or the node's when the service has none
	Port    int
	Tags    []string
	Meta    map[string]string
}

// Snapshot is the passing instances of every watched query at one moment.
// It only exists once every query has been answered: an unreachable Consul
// gives no snapshot, never an empty one.
type Snapshot struct {
	Instances map[Query][]Instance
	// Indexes is the Consul index of each query's answer; the drain protocol
	// publishes these once nginx serves them.
	Indexes map[Query]uint64
	// Index is the highest Consul index among the queries.
	Index uint64
}

// SortInstances orders instances by node, service ID, then address, port and
// meta, so the same state always renders the same bytes whatever order
// Consul returned it in.
func SortInstances(in []Instance) {
	slices.SortFunc(in, compareInstances)
}

func compareInstances(a, b Instance) int {
	// Cheap keys first; meta is only formatted when everything else ties.
	if c := cmp.Or(
		strings.Compare(a.Node, b.Node),
		strings.Compare(a.ID, b.ID),
		strings.Compare(a.Address, b.Address),
		cmp.Compare(a.Port, b.Port),
		slices.Compare(a.Tags, b.Tags),
	); c != 0 {
		return c
	}
	if maps.Equal(a.Meta, b.Meta) {
		return 0
	}
	return strings.Compare(metaKey(a.Meta), metaKey(b.Meta))
}

func metaKey(m map[string]string) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(m)) {
		fmt.Fprintf(&b, "%q=%q;", k, m[k])
	}
	return b.String()
}

// Equal reports whether two sorted instance lists are the same. A snapshot
// hands on a query's unchanged answer as the same slice (the watcher never
// changes one once set), so that case is one pointer comparison.
func Equal(a, b []Instance) bool {
	if len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0]) {
		return true
	}
	return slices.EqualFunc(a, b, func(x, y Instance) bool { return compareInstances(x, y) == 0 })
}
