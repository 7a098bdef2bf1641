package consultemplate

import (
	"time"

	"github.com/hashicorp/consul-template/watch"

	lbbackoff "github.com/lbctl/lbctl/internal/backoff"
)

// backoff is how long a Consul query waits before retrying after an error:
// it doubles from Base up to Max, and each wait is drawn from [d/2, d) so
// many views do not retry in step. consul-template's views call it with the
// count of failures in a row, which resets on success.
type backoff struct {
	Base, Max time.Duration
	// rand returns a float64 in [0, 1); nil means math/rand/v2.
	rand func() float64
}

var defaultBackoff = backoff{Base: 250 * time.Millisecond, Max: 30 * time.Second}

// delay is the wait before retry number retries+1.
func (b backoff) delay(retries int) time.Duration {
	return lbbackoff.Delay(retries+1, b.Base, b.Max, b.rand)
}

// retryForever is a watch.RetryFunc that never gives up: lbctl keeps the
// last good config while Consul is away and re-renders when it is back.
func (b backoff) retryForever() watch.RetryFunc {
	return func(retries int) (bool, time.Duration) { return true, b.delay(retries) }
}
