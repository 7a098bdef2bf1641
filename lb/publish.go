package lb

import (
	"context"

	"github.com/lbctl/lbctl/catalog"
	"github.com/lbctl/lbctl/internal/latest"
	"github.com/lbctl/lbctl/render"
)

// onApplied is the reload controller's OnApplied: it runs under the
// controller's lock, so it only hands the indexes nginx now serves to
// publishApplied (newest wins; capacity 1 and one sender, so it never waits)
// and never waits for Consul itself.
func (l *LB) onApplied(u render.Update) {
	if l.publisher != nil && len(u.Indexes) > 0 {
		latest.Send(context.Background(), l.applied, u.Indexes)
	}
	if l.opts.OnApplied != nil {
		l.opts.OnApplied(u)
	}
}

// publishApplied tells waiting drains which Consul indexes nginx now serves,
// outside any lock: while one write waits for Consul (up to the publisher's
// WriteTimeout), newer states replace each other in l.applied and only the
// newest is written next. A failed write counts as a Consul error; the
// publisher's Run retries the newest state.
func (l *LB) publishApplied(ctx context.Context) error {
	for {
		var indexes map[catalog.Query]uint64
		select {
		case <-ctx.Done():
			return nil
		case indexes = <-l.applied:
		}
		err := l.publisher.Publish(ctx, indexes)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			l.m.ConsulErrors.Inc()
			l.log.Warn("publishing the applied Consul indexes failed; will retry", "err", err)
		}
		if l.opts.OnPublished != nil {
			l.opts.OnPublished(indexes, err)
		}
	}
}
