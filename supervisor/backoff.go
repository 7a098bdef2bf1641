package supervisor

import (
	"math/rand/v2"
	"time"

	"github.com/lbctl/lbctl/internal/backoff"
)

// Clock is the time source; tests inject a fake one.
type Clock interface {
	Now() time.Time
	// NewTimer returns a channel that receives once after d, and a stop func.
	NewTimer(d time.Duration) (<-chan time.Time, func() bool)
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }
func (realClock) NewTimer(d time.Duration) (<-chan time.Time, func() bool) {
	t := time.NewTimer(d)
	return t.C, t.Stop
}

// backoffDelay is the delay before start attempt number failures+1 (see
// package internal/backoff: capped doubling, then equal jitter).
func backoffDelay(failures int, minD, maxD time.Duration, rnd func() float64) time.Duration {
	return backoff.Delay(failures, minD, maxD, rnd)
}

func defaultRand() float64 { return rand.Float64() }
