package shift

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/hashicorp/consul/api"

	"github.com/lbctl/lbctl/accesslog"
)

// Status is everything known about a service's versions: the split in KV,
// who is moving it, which version each instance runs, and the calls the
// live load balancers counted per tag and version.
type Status struct {
	Service string
	// Split is the recorded split; Recorded is false when there is none.
	Split    Split
	Recorded bool
	// Holder is the running shift's holder; nil when none runs.
	Holder    *Holder
	Instances []InstanceVersion
	// CallsByTag and CallsByVersion sum every live load balancer since it started.
	CallsByTag, CallsByVersion map[string]accesslog.Counts
	LoadBalancers              int
}

// InstanceVersion is one registered instance and the version it runs
// (meta "version"; the tags say which side of a split it is on).
type InstanceVersion struct {
	ID, Address string
	Port        int
	Tags        []string
	Version     string
	Health      string
}

// Stale reports a split left "running" by a shift process that is gone.
func (s Status) Stale() bool { return s.Recorded && s.Split.State == Running && s.Holder == nil }

// ReadStatus gathers service's Status from Consul.
func ReadStatus(ctx context.Context, client *api.Client, service string) (Status, error) {
	st := Status{Service: service}
	split, index, err := NewKV(client).Load(ctx, service)
	if err != nil {
		return st, err
	}
	st.Split, st.Recorded = split, index != 0
	if st.Holder, err = CurrentHolder(ctx, client, service); err != nil {
		return st, err
	}
	if st.Instances, err = instanceVersions(ctx, client, service); err != nil {
		return st, err
	}
	stats, err := accesslog.ReadStats(ctx, client, service)
	if err != nil {
		return st, err
	}
	st.CallsByTag, st.CallsByVersion, st.LoadBalancers = sumStats(stats)
	return st, nil
}

func instanceVersions(ctx context.Context, client *api.Client, service string) ([]InstanceVersion, error) {
	entries, _, err := client.Health().Service(service, "", false, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("instances of %s: %w", service, err)
	}
	var out []InstanceVersion
	for _, e := range entries {
		addr := e.Service.Address
		if addr == "" {
			addr = e.Node.Address
		}
		out = append(out, InstanceVersion{ID: e.Service.ID, Address: addr, Port: e.Service.Port, Tags: e.Service.Tags,
			Version: e.Service.Meta["version"], Health: e.Checks.AggregatedStatus()})
	}
	slices.SortFunc(out, func(a, b InstanceVersion) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

func sumStats(stats []accesslog.Stats) (byTag, byVersion map[string]accesslog.Counts, lbs int) {
	byTag, byVersion = map[string]accesslog.Counts{}, map[string]accesslog.Counts{}
	for _, s := range stats {
		addAll(byTag, s.Tags)
		addAll(byVersion, s.Versions)
	}
	return byTag, byVersion, len(stats)
}

func addAll(into, from map[string]accesslog.Counts) {
	for k, c := range from {
		if into[k] == nil {
			into[k] = accesslog.Counts{}
		}
		into[k].Add(c)
	}
}
