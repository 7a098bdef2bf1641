package multihost

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/lbctl/lbctl/accesslog"
	"github.com/lbctl/lbctl/internal/hosts"
	"github.com/lbctl/lbctl/internal/testrig"
	"github.com/lbctl/lbctl/shift"
)

// exitRolledBack is lbctl shift's exit code for a rolled-back shift.
const exitRolledBack = 3

// A green that fails only through one load balancer is rolled back: lb-1's
// connections to the greens are refused (lb-2 reaches them fine, and so do
// their agents' health checks), and lbctl shift, run on the client host,
// sums the error-rate gate's counts over both load balancers' published
// stats. lb-2's counts alone would pass the gate.
func TestShiftRolledBackOnFailuresThroughOneLoadBalancer(t *testing.T) {
	c := hosts.NewCluster(t, bin, hosts.ClusterOptions{Shift: true, Tag: "blue"})
	startColour(t, c, 0)
	startColour(t, c, 1)
	load := c.StartLoad(hosts.LoadOptions{DelayMs: 5})
	lb1 := c.LBs[0]
	consul := c.Agent(c.Client).Client
	ctx := context.Background()
	// The gate sums what the load balancers have published; both must be
	// publishing before the shift, or its first check may read only one.
	testrig.WaitFor(t, 10*time.Second, "both load balancers publishing greeter's counts", func() error {
		if n := len(greenCounts(t, ctx, c)); n != 2 {
			return fmt.Errorf("%d publishing", n)
		}
		return nil
	})
	before := greenCounts(t, ctx, c)

	lb1.Host.RefuseOutgoing(colours[1].port)
	start := time.Now()
	sh := c.Client.Start("lbctl-shift", c.Bin.LBCTL, "shift", "greeter", "--from", "blue", "--to", "green",
		"--steps", "10,50,100", "--interval", "20s", "--consul-addr", "127.0.0.1:8500")
	if err := sh.Wait(90 * time.Second); err != nil {
		t.Fatalf("%v:\n%s", err, sh.Tail(2000))
	}
	took := time.Since(start)
	c.Event("lbctl shift exited %d after %s", sh.ExitCode(), took.Round(time.Millisecond))
	after := greenCounts(t, ctx, c)
	st, err := shift.ReadStatus(ctx, consul, "greeter")
	if err != nil {
		t.Fatal(err)
	}
	reps := load.Stop()
	per := map[string]accesslog.Counts{}
	for lb, counts := range after {
		per[lb] = counts.Minus(before[lb])
	}
	t.Logf("FIGURES: lb-1 refused its connections to the greens; lbctl shift rolled back after %s (exit %d): %s; green calls during the shift: lb-1 %d (%d failed), lb-2 %d (%d failed); client calls: lb-1 %d (%d failed), lb-2 %d (%d failed)",
		took.Round(time.Millisecond), sh.ExitCode(), st.Split.Reason,
		per["lb-1"].Total(), per["lb-1"].Errors(), per["lb-2"].Total(), per["lb-2"].Errors(),
		reps[0].Calls, reps[0].Failures, reps[1].Calls, reps[1].Failures)
	if code := sh.ExitCode(); code != exitRolledBack {
		t.Errorf("lbctl shift exited %d, want %d (rolled back):\n%s", code, exitRolledBack, sh.Tail(2000))
	}
	if st.Split.State != shift.RolledBack || !strings.Contains(st.Split.Reason, "error-rate") {
		t.Errorf("split %s (%q), want rolled back by the error-rate gate", st.Split.State, st.Split.Reason)
	}
	// The gate's figures are both load balancers' counts.
	if !strings.Contains(st.Split.Reason, "2 load balancers") {
		t.Errorf("the gate did not count both load balancers: %q", st.Split.Reason)
	}
	if per["lb-1"].Errors() == 0 {
		t.Errorf("lb-1 counted no failed green calls: %v", per["lb-1"])
	}
	if per["lb-2"].Total() == 0 || per["lb-2"].Errors() != 0 {
		t.Errorf("lb-2's green calls %v, want some and none failed (alone it would pass the gate)", per["lb-2"])
	}
}

// greenCounts are each load balancer's published counts of calls to green.
func greenCounts(t *testing.T, ctx context.Context, c *hosts.Cluster) map[string]accesslog.Counts {
	t.Helper()
	stats, err := accesslog.ReadStats(ctx, c.Agent(c.Client).Client, "greeter")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]accesslog.Counts{}
	for _, s := range stats {
		out[s.LB] = accesslog.Counts{}
		out[s.LB].Add(s.Tags["green"])
	}
	return out
}
