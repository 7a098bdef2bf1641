// Package percentile is the benchmarks' one way to summarise latencies.
package percentile

import (
	"fmt"
	"slices"
	"time"
)

// Of is the nearest-rank p-th percentile of d (d is not changed); d must
// not be empty.
func Of(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	i := (p*len(s)+99)/100 - 1
	return s[max(0, min(i, len(s)-1))]
}

// Ms writes d in milliseconds with one decimal, as the benchmark tables do.
func Ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }
