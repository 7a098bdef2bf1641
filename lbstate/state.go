// Package lbstate is the drain protocol between load balancers and the
// instances they send calls to (docs/drain.md). Each load balancer publishes,
// under Prefix in Consul KV and held by a session so a dead load balancer's
// entry disappears, the Consul index of the data it has applied and
// confirmed for each health query it watches (Publisher). A draining instance
// waits until every live load balancer that routes to it has confirmed an
// index at or past its own maintenance change (Waiter).
package lbstate

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// Prefix is where load balancers publish, one key per load balancer.
const Prefix = "lbctl/lb/"

// QueryIndex is one health query a load balancer watches and the Consul index
// of the answer it now serves, reload confirmed.
type QueryIndex struct {
	// Service, Tag and Datacenter are the query (as catalog.Query): the
	// passing instances of Service, only those tagged Tag when it is set, in
	// Datacenter (empty: the load balancer's own).
	Service    string `json:"service"`
	Tag        string `json:"tag,omitempty"`
	Datacenter string `json:"datacenter,omitempty"`
	// Index is the X-Consul-Index of the answer that nginx now serves.
	Index uint64 `json:"index"`
}

// State is the value of one load balancer's key.
type State struct {
	// ID names the load balancer (its key is Prefix+ID).
	ID string `json:"id"`
	// Queries is every health query the load balancer watches.
	Queries []QueryIndex `json:"queries"`
	// ConfirmedAt is when the load balancer confirmed this state (reload done,
	// old nginx workers gone).
	ConfirmedAt time.Time `json:"confirmed_at"`
}

func decodeState(key string, raw []byte) (State, error) {
	var s State
	if err := json.Unmarshal(raw, &s); err != nil {
		return s, fmt.Errorf("decode load balancer state %s: %w", key, err)
	}
	return s, nil
}

// Target is what a draining instance waits for: every live load balancer
// whose queries can return it has applied Index or later.
type Target struct {
	// Service is the instance's service name, Tags its tags.
	Service string
	Tags    []string
	// Index is the Consul index at which the catalog shows the instance
	// out of service (registrar.Registrar.TakeOutOfService returns it).
	Index uint64
}

// routesTo reports whether query q of the load balancer can return an
// instance of t: same service, the load balancer's own datacenter, and no tag
// or one of t's tags.
func (t Target) routesTo(q QueryIndex) bool {
	return q.Service == t.Service && q.Datacenter == "" && (q.Tag == "" || slices.Contains(t.Tags, q.Tag))
}

// verdict says whether load balancer s matters for t and, if so, whether it
// has confirmed t.Index for every query that can route to t.
func (t Target) verdict(s State) (relevant, confirmed bool) {
	confirmed = true
	for _, q := range s.Queries {
		if !t.routesTo(q) {
			continue
		}
		relevant = true
		if q.Index < t.Index {
			confirmed = false
		}
	}
	return relevant, relevant && confirmed
}
