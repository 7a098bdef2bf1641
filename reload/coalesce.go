package reload

import (
	"time"

	"github.com/lbctl/lbctl/render"
)

// coalescer folds updates that arrive close together into one: the pending
// update is due once no new one came for min, and never later than max after
// the first one it folds, but never sooner than gap after the last reload.
// It is a pure state machine: callers pass the time.
type coalescer struct {
	min, max    time.Duration
	gap         time.Duration
	pending     *render.Update
	first, last time.Time
	reloaded    time.Time
}

// add folds u into the pending update: u's files and index win (each update
// is a complete render), the earliest Seen is kept (for latency), and the
// change descriptions accumulate.
func (c *coalescer) add(u render.Update, now time.Time) {
	if c.pending == nil {
		c.first = now
		c.pending = &u
		c.last = now
		return
	}
	merged := u
	merged.Changes = append(append([]string(nil), c.pending.Changes...), u.Changes...)
	if !c.pending.Seen.IsZero() && (u.Seen.IsZero() || c.pending.Seen.Before(u.Seen)) {
		merged.Seen = c.pending.Seen
	}
	c.pending, c.last = &merged, now
}

// due is when the pending update should be applied; ok is false when none is.
func (c *coalescer) due() (at time.Time, ok bool) {
	if c.pending == nil {
		return time.Time{}, false
	}
	at = c.last.Add(c.min)
	if capped := c.first.Add(c.max); capped.Before(at) {
		at = capped
	}
	if next := c.reloaded.Add(c.gap); !c.reloaded.IsZero() && at.Before(next) {
		at = next
	}
	return at, true
}

// waiting says whether an update is pending.
func (c *coalescer) waiting() bool { return c.pending != nil }

// reloadedAt records that nginx reloaded at t: the next update waits for gap.
func (c *coalescer) reloadedAt(t time.Time) { c.reloaded = t }

// take hands out the pending update and starts over.
func (c *coalescer) take() render.Update {
	u := *c.pending
	c.pending = nil
	return u
}
