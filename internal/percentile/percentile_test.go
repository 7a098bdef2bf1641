package percentile

import (
	"testing"
	"time"
)

func TestOfIsNearestRank(t *testing.T) {
	d := []time.Duration{5, 1, 4, 2, 3, 10, 9, 8, 7, 6}
	for p, want := range map[int]time.Duration{50: 5, 90: 9, 99: 10, 100: 10, 1: 1} {
		if got := Of(d, p); got != want {
			t.Errorf("p%d = %v, want %v", p, got, want)
		}
	}
	if d[0] != 5 {
		t.Error("Of sorted its argument")
	}
	if got := Ms(1500 * time.Microsecond); got != "1.5 ms" {
		t.Errorf("Ms = %q", got)
	}
}
