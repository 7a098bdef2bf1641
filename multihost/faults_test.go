package multihost

import (
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lbctl/lbctl/internal/hosts"
	"github.com/lbctl/lbctl/internal/testrig"
)

// sessionTTL is the TTL of a load balancer's session (lbstate.Publisher).
const sessionTTL = 10 * time.Second

// keyLifetime is the longest a dead or cut-off load balancer's key can
// outlive its last renew: Consul ends a session at twice its TTL at the
// latest (agent/consul/session_ttl.go, structs.SessionTTLMultiplier). It
// usually goes sooner, once gossip declares the node failed and the
// session's node check with it: 5-7 s here, 11.5 s once on a loaded machine,
// where the peers' confirmations that shorten memberlist's suspicion come late.
const keyLifetime = 2 * sessionTTL

// A load balancer host that dies loses its key within keyLifetime (its
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
	testrig.WaitFor(t, keyLifetime, "lb-1's key to go", func() error {
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
	if gone > keyLifetime {
		t.Errorf("lb-1's key outlived twice the session TTL: gone after %s", gone)
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

// cutFor is how long TestLoadBalancerCutOffFromConsul holds lb-1 cut off.
const cutFor = 30 * time.Second

// lb-1 is cut off from the Consul cluster (its agent reaches no server and no
// other agent) for 30 s while a deploy runs. lb-2 serves with no failure.
// lb-1 keeps serving its last good set; the cluster declares its node failed
// within seconds, which ends its session and deletes its key, so the drains
// go on without it (docs/drain.md, "A load balancer cut off from Consul"),
// and lb-1's calls to the drained blues fail from then until it is healed.
// The test prints what each party saw and for how long.
func TestLoadBalancerCutOffFromConsul(t *testing.T) {
	c := hosts.NewCluster(t, bin)
	blues := startColour(t, c, 0)
	load := c.StartLoad(hosts.LoadOptions{DelayMs: 5})
	lb1 := c.LBs[0]
	consul := c.Agent(c.Client).Client

	for _, lb := range c.LBs {
		testrig.WaitFor(t, 30*time.Second, lb.ID+"'s /healthz to pass before the cut", lb.Healthz)
	}
	cut := time.Now()
	lb1.Host.CutFromConsul()
	var keyGone time.Duration
	var watchers sync.WaitGroup // the two below, done by the heal
	watchers.Go(func() {
		if testrig.Poll(cutFor, func() error {
			p, err := lb1.State(consul)
			if err == nil && p != nil {
				err = fmt.Errorf("lb-1's key still there")
			}
			return err
		}) == nil {
			keyGone = time.Since(cut)
			c.Event("lbctl/lb/lb-1 gone %s after the cut", keyGone.Round(time.Millisecond))
		}
	})
	// lb-1's /healthz fails once Consul has been out of reach for longer
	// than the session TTL, so an outer balancer probing it stops sending it calls.
	var unhealthy time.Duration
	var reason error
	watchers.Go(func() {
		if testrig.Poll(cutFor, func() error {
			reason = lb1.Healthz()
			if reason == nil {
				return fmt.Errorf("lb-1's /healthz still passes")
			}
			return nil
		}) == nil {
			unhealthy = time.Since(cut)
			c.Event("lb-1's /healthz fails %s after the cut: %v", unhealthy.Round(time.Millisecond), reason)
		}
	})
	// The deploy, while lb-1 is cut off.
	next := startColour(t, c, 1)
	drains, converge := drainAll(t, blues, 45*time.Second)
	for _, d := range drains {
		t.Log("  " + d.String())
	}
	c.Event("deploy done during the cut: blues drained %s after SIGTERM", converge.Round(time.Millisecond))
	<-time.After(time.Until(cut.Add(cutFor))) // the fault is held for cutFor
	watchers.Wait()
	atHeal := load.Snapshot()
	lb2Health := c.LBs[1].Healthz()
	lb1.Host.Heal()
	healed := time.Now()
	testrig.WaitFor(t, 30*time.Second, "lb-1's /healthz to pass again", lb1.Healthz)
	healthBack := time.Since(healed)
	c.Event("lb-1's /healthz passes again %s after the heal", healthBack.Round(time.Millisecond))
	index, err := c.Passing(next, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	testrig.WaitFor(t, 60*time.Second, "lb-1 to publish again", lb1.Published)
	if _, err := c.Served(index, []string{"green"}, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	back := time.Since(healed)
	c.Event("lb-1 serves the greens again, %s after the heal", back.Round(time.Millisecond))
	// Calls made once lb-1 serves again all succeed.
	settled := load.Snapshot()
	testrig.WaitFor(t, 30*time.Second, "200 more calls through lb-1", func() error {
		if n := load.Snapshot()[0].Calls - settled[0].Calls; n < 200 {
			return fmt.Errorf("%d calls", n)
		}
		return nil
	})
	reps := load.Stop()
	t.Logf("FIGURES: lb-1 cut off from Consul for %s; its key gone after %s; its /healthz failing after %s, passing again %s after the heal; the deploy's drains (confirmed by %v) took %s after SIGTERM; "+
		"lb-1: %d calls, %d failed during the cut (its last good set: the drained blues), %d failed once it served again; it served the greens %s after the heal; lb-2: %d calls, %d failed",
		cutFor, keyGone.Round(time.Millisecond), unhealthy.Round(time.Millisecond), healthBack.Round(time.Millisecond), drains[0].confirmed, converge.Round(time.Millisecond),
		atHeal[0].Calls, atHeal[0].Failures, reps[0].Failures-settled[0].Failures, back.Round(time.Millisecond), reps[1].Calls, reps[1].Failures)
	expectConfirmedBy(t, drains, "lb-2")
	if reps[1].Failures != 0 {
		t.Errorf("lb-2: %d of %d calls failed: %s", reps[1].Failures, reps[1].Calls, hosts.Errors(reps[1:]))
	}
	if n := reps[0].Failures - settled[0].Failures; n != 0 {
		t.Errorf("lb-1: %d calls failed after it served again", n)
	}
	// The last renew before the cut is at most one refresh (2s) before it,
	// and a failed attempt can take the publisher's write timeout (5s).
	if unhealthy < sessionTTL-2*time.Second || unhealthy > sessionTTL+5*time.Second {
		t.Errorf("lb-1's /healthz failed %s after the cut (reason %v), want once Consul was out of reach for the session TTL %s", unhealthy, reason, sessionTTL)
	}
	if reason != nil && !strings.Contains(reason.Error(), "session TTL") {
		t.Errorf("lb-1's /healthz reason does not say why: %v", reason)
	}
	if lb2Health != nil {
		t.Errorf("lb-2's /healthz failed during lb-1's cut: %v", lb2Health)
	}
	if keyGone == 0 || keyGone > keyLifetime {
		t.Errorf("lb-1's key gone after %s, want within twice the session TTL %s", keyGone, sessionTTL)
	}
}

// An app host's Consul agent is killed and restarted with its data wiped (a
// new agent that knows nothing): lbctl register notices the agent lost the
// instance and registers it again within 5 s of the restart. The agent
// comes back with the host's node ID (hosts.nodeID, as on a real machine);
// with a new random one it flaked (about 1 run in 8 under load): Consul
// dropped every re-registration until it could sync, see nodeID.
func TestAgentRestartedWithoutItsData(t *testing.T) {
	c := hosts.NewCluster(t, bin)
	blues := startColour(t, c, 0)
	load := c.StartLoad(hosts.LoadOptions{DelayMs: 5})
	app := blues[0]
	agent := c.Agent(app.Host)
	agent.Proc.Kill()
	if err := agent.WipeData(); err != nil {
		t.Fatal(err)
	}
	c.Event("consul data on %s wiped", app.Host.Name)
	restarted := time.Now()
	agent.Start()
	c.Event("consul on %s started again", app.Host.Name)
	var answered, back time.Duration
	testrig.WaitFor(t, 30*time.Second, "the new agent to answer", func() error {
		_, err := agent.Client.Agent().Self()
		return err
	})
	answered = time.Since(restarted)
	if err := testrig.Poll(30*time.Second, func() error {
		_, _, err := agent.Client.Agent().Service(app.ID, nil)
		return err // 404 until registered
	}); err != nil {
		out, _ := exec.Command("ip", "netns", "exec", app.Host.NS, "ss", "-tnp").CombinedOutput()
		t.Fatalf("%s registered with the new agent: %v\nlbctl register:\n%s\nthe agent:\n%s\nsockets:\n%s", app.ID, err,
			strings.Join(app.Proc.Lines("registrar"), "\n"), agentLog(agent.Proc), out)
	}
	back = time.Since(restarted)
	c.Event("%s registered with the new agent %s after the restart", app.ID, back.Round(time.Millisecond))
	if _, err := c.Passing(blues, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	passing := time.Since(restarted)
	c.Event("%s passing in the catalog %s after the restart", app.ID, passing.Round(time.Millisecond))
	reps := load.Stop()
	calls, failed := hosts.Totals(reps)
	t.Logf("FIGURES: agent on %s restarted without data; it answered after %s; %s registered again after %s, passing in the catalog after %s; %d calls, %d failed",
		app.Host.Name, answered.Round(time.Millisecond), app.ID, back.Round(time.Millisecond), passing.Round(time.Millisecond), calls, failed)
	if back > 5*time.Second {
		t.Errorf("registration back after %s, want within 5s", back)
	}
	if len(app.Proc.Lines("the Consul agent lost the registration")) == 0 {
		t.Errorf("lbctl register did not log the lost registration:\n%s", app.Proc.Tail(3000))
	}
	if failed != 0 {
		t.Errorf("%d of %d calls failed: %s", failed, calls, hosts.Errors(reps))
	}
}

// agentLog is an agent's log without the lines that repeat while a test polls it.
func agentLog(p *hosts.Proc) string {
	var keep []string
	for _, line := range strings.Split(p.Output(), "\n") {
		if !strings.Contains(line, "unknown service ID") && !strings.Contains(line, "Registered resource endpoint") {
			keep = append(keep, line)
		}
	}
	return strings.Join(keep, "\n")
}
