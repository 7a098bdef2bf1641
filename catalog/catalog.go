// Package catalog watches Consul's health data for the services lbctl renders
// and hands out typed, sorted snapshots. Everything in an Instance comes from
// whoever registered it: it is untrusted until the renderer has checked it.
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

// Equal reports whether two sorted instance lists are the same.
func Equal(a, b []Instance) bool {
	return slices.EqualFunc(a, b, func(x, y Instance) bool { return compareInstances(x, y) == 0 })
}
