package supervisor

import (
	"math/rand/v2"
	"time"

	"github.com/lbctl/lbctl/internal/backoff"
)

// backoffDelay is the delay before start attempt number failures+1 (see
// package internal/backoff: capped doubling, then equal jitter).
func backoffDelay(failures int, minD, maxD time.Duration, rnd func() float64) time.Duration {
	return backoff.Delay(failures, minD, maxD, rnd)
}

func defaultRand() float64 { return rand.Float64() }
