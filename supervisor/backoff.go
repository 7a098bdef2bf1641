package supervisor

import (
	"math/rand/v2"
	"time"
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

// backoffDelay is the delay before start attempt number failures+1:
// min·2^(failures-1) capped at max, then "equal jitter": half fixed, half
// random (rnd returns [0,1)), so retries of programs that failed together
// spread out but never wait less than half the nominal delay.
func backoffDelay(failures int, minD, maxD time.Duration, rnd func() float64) time.Duration {
	if failures < 1 || minD <= 0 {
		return 0
	}
	d := minD
	for i := 1; i < failures && d < maxD; i++ {
		d *= 2
	}
	d = min(d, maxD)
	half := d / 2
	return half + time.Duration(rnd()*float64(d-half))
}

func defaultRand() float64 { return rand.Float64() }
