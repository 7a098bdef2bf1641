package multihost

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/lbctl/lbctl/internal/hosts"
	"github.com/lbctl/lbctl/internal/testrig"
)

// sessionTTL is the TTL of a load balancer's session (lbstate.Publisher).
const sessionTTL = 10 * time.Second

// A load balancer host that dies loses its key within the session TTL (its
// node fails Consul's gossip health check, which ends the session), and a
// drain started meanwhile waits for it only until then, not for its timeout.
func TestDeadLoadBalancerStopsHoldingUpDrains(t *testing.T) {
	c := hosts.NewCluster(t, bin)
	blues := startColour(t, c, 0)
	startColour(t, c, 1) // greens, so the drained blue's calls have somewhere to go
	lb1, lb2 := c.LBs[0], c.LBs[1]
	load := c.StartLoad(hosts.LoadOptions{Only: []*hosts.LB{lb2}, DelayMs: 5})
	consul := c.Agent(c.Client).Client

	start := time.Now()
	lb1.Host.PowerOff()
	drains, converge := drainAll(t, blues[:1], 45*time.Second)
	c.Event("drain of %s ended %s after the power-off: %s", blues[0].ID, converge.Round(time.Millisecond), drains[0])
	testrig.WaitFor(t, 2*sessionTTL, "lb-1's key to go", func() error {
		p, err := lb1.State(consul)
		if err == nil && p != nil {
			err = fmt.Errorf("lbctl/lb/lb-1 still there (session %s)", p.Session)
		}
		return err
	})
	gone := time.Since(start)
	c.Event("lbctl/lb/lb-1 gone %s after the power-off", gone.Round(time.Millisecond))
	reps := load.Stop()
	calls, failed := hosts.Totals(reps)
	t.Logf("FIGURES: lb-1 powered off; its key gone after %s (session TTL %s); drain of %s took %s (timeout 30s), confirmed by %v; through lb-2: %d calls, %d failed",
		gone.Round(time.Millisecond), sessionTTL, blues[0].ID, drains[0].waited, drains[0].confirmed, calls, failed)
	if gone > sessionTTL {
		t.Errorf("lb-1's key outlived the session TTL: gone after %s", gone)
	}
	expectConfirmedBy(t, drains, "lb-2")
	if failed != 0 {
		t.Errorf("%d of %d calls through lb-2 failed: %s", failed, calls, hosts.Errors(reps))
	}
}

// The Consul leader is killed in the middle of a deploy: the greens are up,
// the blues have just got SIGTERM, and their agents are sending the
// maintenance to the servers. The drains wait through the election and
// complete (both load balancers confirm) well before their timeout, and no
// call fails. An agent whose sync died with the leader does not retry it
// until its next anti-entropy run (a minute or more); lbctl register asks it
// to sync again (registrar.ResyncInterval), or the drain would time out.
func TestLeaderKilledDuringDeploy(t *testing.T) {
	c := hosts.NewCluster(t, bin)
	blues := startColour(t, c, 0)
	load := c.StartLoad(hosts.LoadOptions{DelayMs: 5})
	consul := c.Agent(c.Client)
	leader, err := consul.Leader(c.Servers)
	if err != nil {
		t.Fatal(err)
	}
	startColour(t, c, 1)
	var killed time.Time
	var elected time.Duration
	var newLeader string
	drains, converge := drainAll(t, blues, 60*time.Second, func() {
		killed = time.Now()
		c.Agent(hostNamed(c, leader)).Proc.Kill()
		testrig.WaitFor(t, 30*time.Second, "a new leader", func() error {
			l, err := consul.Leader(c.Servers)
			if err == nil && l == leader {
				err = fmt.Errorf("%s still named leader", l)
			}
			newLeader = l
			return err
		})
		elected = time.Since(killed)
		c.Event("%s elected leader %s after the kill", newLeader, elected.Round(time.Millisecond))
	})
	served := time.Since(killed) // the drains' change is served by both load balancers
	for _, d := range drains {
		t.Log("  " + d.String())
	}
	failedSyncs, resyncs := 0, 0
	for i, h := range c.Apps {
		failedSyncs += len(c.Agent(h).Proc.Lines("failed to sync changes"))
		resyncs += len(blues[i].Proc.Lines("asked the agent to sync again"))
	}
	c.Event("deploy done: every blue drained %s after the kill", served.Round(time.Millisecond))
	expectConfirmedBy(t, drains, "lb-1", "lb-2")
	if t.Failed() {
		for _, lb := range c.LBs {
			t.Logf("%s's state publisher:\n%s", lb.ID, strings.Join(lb.Run.Lines("load balancer state"), "\n"))
		}
	}
	if served > 20*time.Second {
		t.Errorf("the drains took %s after the kill; the election took %s", served, elected)
	}

	// One more change, with two servers left, is served as usual.
	changed := time.Now()
	next := startColour(t, c, 2)
	_, converge2 := drainAll(t, next[:1], 45*time.Second)
	reps := load.Stop()
	calls, failed := hosts.Totals(reps)
	t.Logf("FIGURES: leader %s killed; %s leader after %s; the deploy's drains (SIGTERM → all exited) %s, served by both LBs %s after the kill; app agents' failed syncs: %d, lbctl register resyncs: %d; next deploy with 2 servers: %s to start and serve, %s to drain one; %d calls, %d failed",
		leader, newLeader, elected.Round(time.Millisecond), converge.Round(time.Millisecond), served.Round(time.Millisecond), failedSyncs, resyncs,
		(time.Since(changed) - converge2).Round(time.Millisecond), converge2.Round(time.Millisecond), calls, failed)
	if failed != 0 {
		t.Errorf("%d of %d calls failed: %s", failed, calls, hosts.Errors(reps))
	}
}

func hostNamed(c *hosts.Cluster, name string) *hosts.Host {
	for _, h := range c.Hosts() {
		if h.Name == name {
			return h
		}
	}
	panic("no host " + name)
}
