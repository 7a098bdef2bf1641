package registrar

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff spaces out retries: the delay doubles from Min up to Max with each
// failure, each delay drawn at random from its upper half (so a fleet that
// failed together does not retry together), and Reset starts over after a
// success. The clock and the randomness are fields so tests can fix them.
type Backoff struct {
	Min, Max time.Duration
	// After is time.After; tests replace it.
	After func(time.Duration) <-chan time.Time
	// Rand returns a number in [0, 1); rand.Float64 when nil.
	Rand func() float64

	failures int
}

// NewBackoff is a Backoff from min to max on the real clock.
func NewBackoff(min, max time.Duration) *Backoff {
	return &Backoff{Min: min, Max: max, After: time.After, Rand: rand.Float64}
}

// Next is the delay before the next retry; each call counts one more failure.
func (b *Backoff) Next() time.Duration {
	d := b.Min
	for i := 0; i < b.failures && d < b.Max; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	b.failures++
	r := rand.Float64
	if b.Rand != nil {
		r = b.Rand
	}
	return d/2 + time.Duration(r()*float64(d/2))
}

// Wait sleeps for Next, or until ctx ends (then it returns ctx's error).
func (b *Backoff) Wait(ctx context.Context) error {
	after := time.After
	if b.After != nil {
		after = b.After
	}
	select {
	case <-after(b.Next()):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Reset forgets past failures: the next delay is Min again.
func (b *Backoff) Reset() { b.failures = 0 }
