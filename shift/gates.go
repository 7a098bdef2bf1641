package shift

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/hashicorp/consul/api"

	"github.com/lbctl/lbctl/accesslog"
)

// HealthGate passes while every instance of Service tagged Tag passes its
// Consul checks, and there is at least one.
type HealthGate struct {
	Client       *api.Client
	Service, Tag string
}

func (g *HealthGate) Name() string                    { return "health" }
func (g *HealthGate) Begin(ctx context.Context) error { return nil }

// Check fails at once on any failing instance: a sick target is clear evidence.
func (g *HealthGate) Check(ctx context.Context, final bool) (Verdict, error) {
	total, failing, err := TagHealth(ctx, g.Client, g.Service, g.Tag)
	if err != nil {
		return Verdict{}, err
	}
	v := Verdict{Gate: g.Name(), Pass: total > 0 && len(failing) == 0}
	switch {
	case total == 0:
		v.Detail = fmt.Sprintf("no instance of %s is tagged %s", g.Service, g.Tag)
	case len(failing) > 0:
		v.Detail = fmt.Sprintf("%d/%d %s instances not passing: %s", len(failing), total, g.Tag, strings.Join(failing, ", "))
	default:
		v.Detail = fmt.Sprintf("%d/%d %s instances passing", total, total, g.Tag)
	}
	return v, nil
}

// TagHealth counts service's instances tagged tag and names those whose
// checks do not all pass.
func TagHealth(ctx context.Context, client *api.Client, service, tag string) (total int, failing []string, err error) {
	entries, _, err := client.Health().Service(service, tag, false, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return 0, nil, fmt.Errorf("health of %s tagged %s: %w", service, tag, err)
	}
	for _, e := range entries {
		if status := e.Checks.AggregatedStatus(); status != api.HealthPassing {
			failing = append(failing, fmt.Sprintf("%s (%s)", e.Service.ID, status))
		}
	}
	slices.Sort(failing)
	return len(entries), failing, nil
}

// ErrorRateGate passes while the share of failed calls to Tag's instances,
// counted by every live load balancer since the step began, stays at or
// below Max. During the hold it fails only once MinCalls calls were seen.
type ErrorRateGate struct {
	Client       *api.Client
	Service, Tag string
	Max          float64
	MinCalls     int64

	base map[string]accesslog.Counts // by lb/boot
}

func (g *ErrorRateGate) Name() string { return "error-rate" }

// Begin takes the counts so far as the baseline.
func (g *ErrorRateGate) Begin(ctx context.Context) error {
	base, err := g.counts(ctx)
	g.base = base
	return err
}

func (g *ErrorRateGate) Check(ctx context.Context, final bool) (Verdict, error) {
	now, err := g.counts(ctx)
	if err != nil {
		return Verdict{}, err
	}
	delta := accesslog.Counts{}
	for key, c := range now {
		delta.Add(c.Minus(g.base[key]))
	}
	return g.verdict(delta, len(now), final), nil
}

func (g *ErrorRateGate) verdict(delta accesslog.Counts, lbs int, final bool) Verdict {
	total, errs := delta.Total(), delta.Errors()
	v := Verdict{Gate: g.Name(), Pass: true}
	if total == 0 {
		v.Detail = fmt.Sprintf("no calls to %s seen yet (%d load balancers reporting)", g.Tag, lbs)
		return v
	}
	rate := float64(errs) / float64(total)
	v.Detail = fmt.Sprintf("%.2f%% errors (%d of %d calls to %s, %d load balancers; max %.2f%%)", rate*100, errs, total, g.Tag, lbs, g.Max*100)
	if !final && total < g.MinCalls {
		return v
	}
	v.Pass = rate <= g.Max
	return v
}

// counts are the Tag counts of every live load balancer that reports on
// Service, by lb and boot. One that has seen no call to Tag yet is there with
// no counts: it is still reporting, and its share of the sum is zero.
func (g *ErrorRateGate) counts(ctx context.Context) (map[string]accesslog.Counts, error) {
	stats, err := accesslog.ReadStats(ctx, g.Client, g.Service)
	if err != nil {
		return nil, err
	}
	out := map[string]accesslog.Counts{}
	for _, s := range stats {
		out[s.LB+"/"+s.Boot] = s.Tags[g.Tag]
	}
	return out, nil
}
