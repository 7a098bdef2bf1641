package multihost

import (
	"slices"
	"testing"
	"time"

	"github.com/lbctl/lbctl/internal/hosts"
)

// deploys is how many blue/green switches TestBlueGreenThroughBothLoadBalancers makes.
const deploys = 10

// Ten blue/green deploys in a row through both load balancers under load:
// each old instance's drain waits for both load balancers' confirmations,
// and no call fails.
func TestBlueGreenThroughBothLoadBalancers(t *testing.T) {
	c := hosts.NewCluster(t, bin)
	cur := startColour(t, c, 0)
	load := c.StartLoad(hosts.LoadOptions{Clients: 4, DelayMs: 5})
	var waits []time.Duration
	for n := 1; n <= deploys; n++ {
		before := load.Snapshot()
		next := startColour(t, c, n)
		drains, converge := drainAll(t, cur, 45*time.Second)
		expectConfirmedBy(t, drains, "lb-1", "lb-2")
		for _, d := range drains {
			t.Log("  " + d.String())
			if w, err := time.ParseDuration(d.waited); err == nil {
				waits = append(waits, w)
			}
		}
		calls, failed := hosts.Totals(load.Snapshot())
		calls0, failed0 := hosts.Totals(before)
		c.Event("deploy %d/%d done (%s → %s): %d calls, %d failed; converged %s after the first SIGTERM",
			n, deploys, cur[0].Tag, next[0].Tag, calls-calls0, failed-failed0, converge.Round(time.Millisecond))
		cur = next
	}
	reps := load.Stop()
	calls, failed := hosts.Totals(reps)
	slices.Sort(waits)
	if len(waits) > 0 {
		t.Logf("FIGURES: %d deploys, %d calls, %d failed; drain (maintenance → both LBs confirmed) min %s, median %s, max %s over %d drains",
			deploys, calls, failed, waits[0], waits[len(waits)/2], waits[len(waits)-1], len(waits))
	}
	if failed != 0 {
		t.Errorf("%d of %d calls failed: %s", failed, calls, hosts.Errors(reps))
	}
	if calls == 0 {
		t.Error("no calls made")
	}
}
