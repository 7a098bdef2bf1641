// Package backoff spaces out retries the one way lbctl does everywhere
// (Consul queries, registration, program restarts, template views): the
// delay doubles from a minimum up to a cap with each failure in a row, then
// "equal jitter" keeps half of it fixed and draws the other half at random,
// so a fleet that failed together does not retry together yet never waits
// less than half the nominal delay.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Delay is the wait before retry number failures (1 for the first retry):
// min·2^(failures-1) capped at max, then equal jitter with rnd in [0, 1).
// A nil rnd is math/rand/v2. Zero failures, or a zero min, wait nothing.
func Delay(failures int, min, max time.Duration, rnd func() float64) time.Duration {
	if failures < 1 || min <= 0 {
		return 0
	}
	d := min
	for i := 1; i < failures && d < max; i++ {
		d *= 2
	}
	d = Min(d, max)
	if rnd == nil {
		rnd = rand.Float64
	}
	half := d / 2
	return half + time.Duration(rnd()*float64(d-half))
}

// Min is the smaller of two durations (min is shadowed by Delay's parameter).
func Min(a, b time.Duration) time.Duration {
	if a < b {
		return a
	}
	return b
}

// Backoff counts failures in a row and waits Delay between retries. The
// randomness is a field so tests can fix it; tests fake time with
// testing/synctest.
type Backoff struct {
	Min, Max time.Duration
	// Rand returns a number in [0, 1); math/rand/v2 when nil.
	Rand func() float64

	failures int
}

// New is a Backoff from min to max on the real clock.
func New(min, max time.Duration) *Backoff { return &Backoff{Min: min, Max: max} }

// Next is the delay before the next retry; each call counts one more failure.
func (b *Backoff) Next() time.Duration {
	b.failures++
	return Delay(b.failures, b.Min, b.Max, b.Rand)
}

// Wait sleeps for Next, or until ctx ends (then it returns ctx's error).
func (b *Backoff) Wait(ctx context.Context) error {
	select {
	case <-time.After(b.Next()):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Reset forgets past failures: the next delay is about Min again.
func (b *Backoff) Reset() { b.failures = 0 }

// Sleep waits d, or less if ctx ends first; it reports whether d elapsed.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
