package hosts

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/lbctl/lbctl/loadgen"
)

// Load is the client host's load generator: one loadgen.Gen per load
// balancer, every connection dialled from inside the client's namespace.
type Load struct {
	LBs   []*LB
	gens  []*loadgen.Gen
	stops []func() loadgen.Report
	net   *Net
}

// LoadOptions shape StartLoad.
type LoadOptions struct {
	Clients int    // unary callers per load balancer (default 4)
	DelayMs uint32 // the server holds each call this long
	// Only, when set, is the load balancers to call (default all).
	Only []*LB
}

// StartLoad starts calling greeter through every load balancer from the
// client host, and makes every logged event carry the figures so far.
func (c *Cluster) StartLoad(o LoadOptions) *Load {
	c.t.Helper()
	if o.Clients == 0 {
		o.Clients = 4
	}
	lbs := o.Only
	if lbs == nil {
		lbs = c.LBs
	}
	l := &Load{LBs: lbs, net: c.Net}
	for _, lb := range lbs {
		g, err := loadgen.New(loadgen.Options{Target: lb.Addr, Dial: c.Client.GRPCDial, Clients: o.Clients,
			DelayMs: o.DelayMs, CallTimeout: 10 * time.Second})
		if err != nil {
			c.t.Fatal(err)
		}
		l.gens = append(l.gens, g)
		l.stops = append(l.stops, g.Start())
	}
	c.SetFigures(l.Figures)
	c.t.Cleanup(func() { l.Stop() })
	return l
}

// Figures are calls and failed calls per load balancer so far.
func (l *Load) Figures() string {
	var parts []string
	for i, g := range l.gens {
		r := g.Snapshot()
		parts = append(parts, fmt.Sprintf("%s: %d calls, %d failed", l.LBs[i].ID, r.Calls, r.Failures))
	}
	return strings.Join(parts, "; ")
}

// Snapshot is each load balancer's report so far.
func (l *Load) Snapshot() []loadgen.Report {
	var out []loadgen.Report
	for _, g := range l.gens {
		out = append(out, g.Snapshot())
	}
	return out
}

// Stop ends the load, waits for the calls in flight, and returns each load
// balancer's report (the same reports when called again).
func (l *Load) Stop() []loadgen.Report {
	l.net.SetFigures(nil)
	var out []loadgen.Report
	for _, stop := range l.stops {
		out = append(out, stop())
	}
	return out
}

// Totals sums reports.
func Totals(reps []loadgen.Report) (calls, failures int64) {
	for _, r := range reps {
		calls += r.Calls
		failures += r.Failures
	}
	return calls, failures
}

// Errors lists the failed calls by error, across reports.
func Errors(reps []loadgen.Report) string {
	all := map[string]int64{}
	for _, r := range reps {
		for k, v := range r.Errors {
			all[k] += v
		}
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(all)) {
		parts = append(parts, fmt.Sprintf("%d× %s", all[k], k))
	}
	return strings.Join(parts, "; ")
}
