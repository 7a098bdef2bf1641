package reload

import (
	"context"
	"time"

	"github.com/lbctl/lbctl/render"
)

// sweepEvery is how often Run checks on old worker generations for the gauges.
const sweepEvery = 250 * time.Millisecond

// Run applies updates until ctx ends, coalescing them with Options.Wait:
// a burst is applied once no update came for Wait.Min, and never later than
// Wait.Max after its first update, but no sooner than Wait.BetweenReloads
// after the previous reload (whose GOAWAYs make every client reconnect and
// retry what the old workers had not read). Each update is validated in the
// background as it arrives, so the wait and nginx -t overlap. Updates that arrive while a reload runs
// wait in the channel (give it capacity 1 with latest-wins sends) and are
// folded into the next one. In live mode an update that changes only
// instances is pushed at once, unless a reload is pending (then it folds into
// it). Failed applies are logged and counted; the next
// update is tried as usual. Run returns nil when ctx ends.
func (c *Controller) Run(ctx context.Context, updates <-chan render.Update) error {
	c.cleanup.Do(c.removeStaleTemps) // before pre.start stages anything
	co := &coalescer{min: c.opts.Wait.Min, max: c.opts.Wait.Max, gap: c.opts.Wait.BetweenReloads}
	defer c.pre.stop()
	defer c.WaitSeed()
	sweep := time.After(sweepEvery)
	for {
		var fire <-chan time.Time
		if at, ok := co.due(); ok {
			fire = time.After(max(0, at.Sub(time.Now())))
		}
		select {
		case <-ctx.Done():
			return nil
		case u, ok := <-updates:
			if !ok {
				updates = nil
				continue
			}
			c.m.Renders.Inc()
			if !co.waiting() && c.liveOnly(u) {
				c.Apply(ctx, u) // a push: nothing to coalesce or validate; logged and counted by Apply
				continue
			}
			co.add(u, time.Now())
			c.pre.start(ctx, u)
		case <-fire:
			res, _ := c.Apply(ctx, co.take()) // logged and counted by Apply
			if signalled(res) {
				co.reloadedAt(time.Now())
			}
		case <-sweep:
			c.gens.sweep()
			sweep = time.After(sweepEvery)
		}
	}
}

// signalled says whether an apply sent nginx a SIGHUP that may have replaced
// its workers (and so sent GOAWAY on every client connection).
func signalled(res Result) bool {
	return res.Outcome == Applied || res.Outcome == TimedOut
}
