package e2etest

import (
	"context"
	"fmt"
	"maps"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lbctl/lbctl/config"
	"github.com/lbctl/lbctl/internal/testrig"
	"github.com/lbctl/lbctl/live"
	"github.com/lbctl/lbctl/loadgen"
	"github.com/lbctl/lbctl/reload"
	"github.com/lbctl/lbctl/shift"
)

// Issue 13's proof: two services behind one load balancer; eight server
// streams to beta are held while alpha gets 20 instance changes (adds,
// removes, Consul maintenance, weights from meta) under unary load, then a
// 10/50/100 shift from blue to green run by package shift. In live mode
// nothing reloads, so no stream breaks; in reload mode every change is a
// reload and the old workers cut the streams at worker_shutdown_timeout.

// Shift measurement: measuredCalls calls per step, on measureClients
// connections, are the only calls to alpha while the step is measured.
const (
	measuredCalls  = 4000
	measureClients = 4
	streamCount    = 8
)

func TestLiveStreamsSurviveInstanceChangesAndAShift(t *testing.T) {
	t.Parallel()
	res := runChurnAndShift(t, churnOptions{live: true, hold: 120 * time.Second})
	if res.streams.Streams != streamCount || res.streams.StreamsBroken != 0 {
		t.Errorf("beta's streams: %d opened, %d broken (%v); want %d, none broken",
			res.streams.Streams, res.streams.StreamsBroken, res.streams.Errors, streamCount)
	}
	if res.reloads != 0 {
		t.Errorf("%d nginx reloads (lbctl_reloads_total{outcome=applied}) after start, want 0", res.reloads)
	}
	if res.unaryFailures != 0 {
		t.Errorf("%d failed unary calls to alpha: %v", res.unaryFailures, res.unaryErrors)
	}
	res.checkShares(t, 2)
}

// The same changes in reload mode must cut the streams: otherwise the live
// test above would pass whether or not live upstreams did anything.
func TestReloadModeCutsStreamsOnInstanceChanges(t *testing.T) {
	t.Parallel()
	res := runChurnAndShift(t, churnOptions{hold: 10 * time.Second, shutdownTimeout: 2 * time.Second})
	if res.streams.Streams != streamCount || res.streams.StreamsBroken != streamCount {
		t.Errorf("beta's streams: %d opened, %d broken (%v); want all %d cut by the reloads",
			res.streams.Streams, res.streams.StreamsBroken, res.streams.Errors, streamCount)
	}
	if res.reloads < 20 {
		t.Errorf("%d reloads, want at least one per instance change (20)", res.reloads)
	}
	res.checkShares(t, 1)
}

type churnOptions struct {
	live bool
	// hold is how long beta's streams are held at least (longer if the
	// changes and the shift take longer).
	hold            time.Duration
	shutdownTimeout time.Duration
}

type churnResult struct {
	streams       loadgen.Report
	reloads       int
	unaryCalls    int64
	unaryFailures int64
	unaryErrors   map[string]int64
	shares        []stepShare
}

// stepShare is what one shift step's measurement saw.
type stepShare struct {
	percent      int   // green's share of the step's split
	green, total int64 // calls answered by green, and in all
}

// checkShares asserts each step's measured share of green. Why the bound is
// exact and cannot fail by chance:
//   - The measured calls are the only calls to alpha from the moment nginx
//     holds the step's weights until they have all completed (the other load
//     on alpha stopped before the shift; the shift's own gates never call
//     through nginx), and nginx retries nothing since no call fails.
//   - Each nginx worker balances alpha with smooth weighted round robin over
//     two peers (blue1, green1), starting from a zero state at its first
//     call on the step's weights: in live mode the Lua balancer rebuilds its
//     state when the upstream's version changes; in reload mode the step
//     came with a reload and new workers.
//   - With two peers of weights w_blue, w_green (W their sum), SWRR keeps
//     green's current weight, n·w_green − W·picks_green, within ±W/2 after
//     every pick from a zero state, so a worker that made n picks picked
//     green within ½ of n·w_green/W. Summed over the workers, green's calls
//     are within workers/2 of total·percent/100.
//
// So with 4000 calls and two workers green answers 400±1 calls at 10%
// (9.975%–10.025%), 2000±1 at 50% and all 4000 at 100%: 10.0, 50.0, 100.0 %.
func (res churnResult) checkShares(t *testing.T, workers int) {
	t.Helper()
	if len(res.shares) != 3 {
		t.Fatalf("measured %d shift steps, want 3 (10, 50, 100)", len(res.shares))
	}
	for _, s := range res.shares {
		want := float64(s.total) * float64(s.percent) / 100
		got := float64(s.green)
		t.Logf("step %3d%%: green answered %d of %d calls: %.3f%%", s.percent, s.green, s.total, 100*got/float64(s.total))
		if s.total != measuredCalls || got < want-float64(workers)/2 || got > want+float64(workers)/2 {
			t.Errorf("step %d%%: green answered %d of %d calls, want %d of %d within %d/2 (one nginx worker each)",
				s.percent, s.green, s.total, int(want), measuredCalls, workers)
		}
	}
}

func runChurnAndShift(t *testing.T, o churnOptions) churnResult {
	alphaSvc := config.Service{Name: "alpha", Tag: "blue", Shift: true}
	r := newRig(t, rigOptions{live: o.live, shutdownTimeout: o.shutdownTimeout,
		services: []config.Service{alphaSvc, {Name: "beta"}}})
	beta := testrig.StartGreeter(t, "beta1", "v1")
	green := testrig.StartGreeter(t, "green1", "v2")
	c := &churn{t: t, r: r, upstream: alphaSvc.UpstreamName()}
	for _, name := range []string{"blue1", "blue2", "blue3", "blue4"} {
		c.members = append(c.members, &member{g: testrig.StartGreeter(t, name, "v1"), weight: 1})
	}
	c.apply(change{op: add, who: 0})
	c.apply(change{op: add, who: 1})
	r.consul.Register(beta.Registration("beta"))
	r.consul.Register(green.Registration("alpha", "green"))
	r.start()
	if r.lb.Live() != o.live {
		t.Fatalf("live upstreams %v, want %v", r.lb.Live(), o.live)
	}
	c.waitHeld()
	testrig.ExpectInstance(t, r.addrs["beta"], "beta1", 10*time.Second)
	startReloads := r.reloads(reload.Applied)

	streams := startLoad(t, loadgen.Options{Target: r.addrs["beta"], Streams: streamCount})
	holdUntil := time.Now().Add(o.hold)
	testrig.WaitFor(t, 10*time.Second, "beta's streams to deliver", func() error {
		if s := streams.Snapshot(); s.StreamMessages < 4*streamCount {
			return fmt.Errorf("%d stream messages", s.StreamMessages)
		}
		return nil
	})
	unary := startLoad(t, loadgen.Options{Target: r.addrs["alpha"], Clients: 8})
	waitCalls(t, unary, 100)

	started := time.Now()
	for _, ch := range []change{
		{op: add, who: 2}, {op: add, who: 3}, {op: setWeight, who: 1, weight: 3}, {op: maintOn, who: 2},
		{op: remove, who: 3}, {op: maintOff, who: 2}, {op: setWeight, who: 2, weight: 5}, {op: add, who: 3},
		{op: maintOn, who: 1}, {op: setWeight, who: 3, weight: 2}, {op: remove, who: 2}, {op: maintOff, who: 1},
		{op: setWeight, who: 1, weight: 1}, {op: add, who: 2}, {op: maintOn, who: 3}, {op: setWeight, who: 0, weight: 4},
		{op: remove, who: 1}, {op: maintOff, who: 3}, {op: remove, who: 2}, {op: remove, who: 3},
	} {
		c.apply(ch)
		c.waitHeld()
	}
	waitCalls(t, unary, unary.Snapshot().Calls+200)
	churned := stopLoad(t, unary)
	t.Logf("20 instance changes of alpha in %s; load on alpha meanwhile: %d calls by instance %v, %d failed %v",
		time.Since(started).Round(time.Millisecond), churned.Calls, churned.ByInstance, churned.Failures, churned.Errors)

	meter := &shareMeter{c: c, blue: c.members[0].g, green: green}
	final, err := shift.Shift(context.Background(), r.consul.Client, shift.Plan{
		Service: "alpha", From: "blue", To: "green", Steps: []int{10, 50, 100},
		Interval: 200 * time.Millisecond, Poll: 50 * time.Millisecond,
	}, shift.Options{
		MaxErrorRate: 0.01, MinCalls: 10, ExtraGates: []shift.Gate{meter},
		OnEvent: func(e shift.Event) {
			if e.Kind == shift.StepStarted {
				meter.current = e.Split
			}
		},
	})
	if err != nil || final.State != shift.Done {
		t.Fatalf("shift: %s, %v", final, err)
	}
	if meter.err != nil {
		t.Fatal(meter.err)
	}

	hold, cancel := context.WithDeadline(t.Context(), holdUntil) // streams stay open at least this long
	<-hold.Done()
	cancel()
	held := time.Since(holdUntil.Add(-o.hold))
	rep := stopLoad(t, streams)
	res := churnResult{
		streams: rep, reloads: r.reloads(reload.Applied) - startReloads, shares: meter.shares,
		unaryCalls: churned.Calls + meter.calls, unaryFailures: churned.Failures + meter.failures,
		unaryErrors: churned.Errors,
	}
	maps.Copy(res.unaryErrors, meter.errors)
	gens, workers := r.ctl.OldGenerations()
	t.Logf("live %v: %d streams held %s, %d broken %v, %d stream messages; %d reloads after start, %d old generations (%d workers) alive; "+
		"alpha: %d unary calls, %d failed",
		o.live, rep.Streams, held.Round(time.Second), rep.StreamsBroken, rep.Errors, rep.StreamMessages, res.reloads, gens, workers,
		res.unaryCalls, res.unaryFailures)
	return res
}

// churn changes alpha's blue instances in Consul and knows what nginx must
// then hold: each registered instance not in maintenance, with its weight.
type churn struct {
	t        *testing.T
	r        *rig
	upstream string
	members  []*member
}

type member struct {
	g          *testrig.Greeter
	registered bool
	maint      bool
	weight     int
}

type op int

const (
	add op = iota
	remove
	maintOn
	maintOff
	setWeight
)

type change struct {
	op     op
	who    int
	weight int
}

func (c *churn) register(m *member) {
	reg := m.g.Registration("alpha", "blue")
	reg.Meta["weight"] = strconv.Itoa(m.weight)
	c.r.consul.Register(reg)
}

func (c *churn) apply(ch change) {
	c.t.Helper()
	m := c.members[ch.who]
	agent := c.r.consul.Client.Agent()
	id := m.g.Registration("alpha").ID
	var err error
	switch ch.op {
	case add:
		m.registered, m.maint, m.weight = true, false, 1
		c.register(m)
	case remove:
		m.registered = false
		c.r.consul.Deregister(id)
	case maintOn:
		m.maint = true
		err = agent.EnableServiceMaintenance(id, "e2e churn")
	case maintOff:
		m.maint = false
		err = agent.DisableServiceMaintenance(id)
	case setWeight:
		m.weight = ch.weight
		c.register(m)
	}
	if err != nil {
		c.t.Fatalf("change %+v: %v", ch, err)
	}
}

// want is what nginx must hold for alpha: address → weight.
func (c *churn) want() map[string]int {
	out := map[string]int{}
	for _, m := range c.members {
		if m.registered && !m.maint {
			out[m.g.Addr] = m.weight
		}
	}
	return out
}

// waitHeld waits until nginx serves alpha's instances as the changes so far left them.
func (c *churn) waitHeld() {
	c.t.Helper()
	want := c.want()
	testrig.WaitFor(c.t, 20*time.Second, fmt.Sprintf("nginx to hold %v", want), func() error {
		got, err := c.r.peers(c.upstream)
		if err != nil {
			return err
		}
		if !maps.Equal(got, want) {
			return fmt.Errorf("nginx holds %v", got)
		}
		return c.r.ctl.Healthy()
	})
}

var serverLine = regexp.MustCompile(`^\s*server (\S+?)(?: weight=(\d+))?;`)

// peers is what nginx is confirmed to hold for upstream, address → weight:
// read back through the push socket in live mode, else from the file nginx
// was last confirmed serving.
func (r *rig) peers(upstream string) (map[string]int, error) {
	out := map[string]int{}
	if r.liveSocket != "" && r.lb.Live() {
		set, err := live.NewClient(r.liveSocket).Read(context.Background())
		if err != nil {
			return nil, err
		}
		for _, p := range set[upstream].Peers {
			out[testrig.LoopbackAddr(p.Port)] = p.Weight
		}
		return out, nil
	}
	served := r.confirmed.Load()
	if served == nil {
		// Nothing reloaded since start: nginx serves the file it started on.
		b, err := os.ReadFile(r.dest)
		if err != nil {
			return nil, err
		}
		first := string(b)
		served = &first
	}
	_, block, found := strings.Cut(*served, "upstream "+upstream+" {\n")
	if !found {
		return out, nil // no passing instance: no upstream block
	}
	block, _, _ = strings.Cut(block, "\n}")
	for line := range strings.Lines(block) {
		if m := serverLine.FindStringSubmatch(line); m != nil {
			w := 1
			if m[2] != "" {
				w, _ = strconv.Atoi(m[2])
			}
			out[m[1]] = w
		}
	}
	return out, nil
}

// shareMeter is a shift gate that, as each step begins, waits until nginx
// holds the step's weights, then makes measuredCalls calls to alpha and
// counts those green answered.
type shareMeter struct {
	c           *churn
	blue, green *testrig.Greeter
	current     shift.Split

	shares          []stepShare
	calls, failures int64
	errors          map[string]int64
	err             error
}

func (m *shareMeter) Name() string { return "test-share-meter" }

func (m *shareMeter) Check(context.Context, bool) (shift.Verdict, error) {
	return shift.Verdict{Gate: m.Name(), Pass: true}, nil
}

func (m *shareMeter) Begin(ctx context.Context) error {
	pct := m.current.ToPercent()
	err := testrig.Poll(20*time.Second, func() error {
		got, err := m.c.r.peers(m.c.upstream)
		if err != nil {
			return err
		}
		total := 0
		for addr, w := range got {
			if addr != m.blue.Addr && addr != m.green.Addr {
				return fmt.Errorf("nginx holds %v: %s is neither blue1 nor green1", got, addr)
			}
			total += w
		}
		if total == 0 || got[m.green.Addr]*100 != pct*total {
			return fmt.Errorf("nginx holds %v, not green at %d%%", got, pct)
		}
		return nil
	})
	if err != nil {
		m.err = fmt.Errorf("step %d%%: %w", pct, err)
		return m.err
	}
	gen, err := loadgen.New(loadgen.Options{Target: m.c.r.addrs["alpha"], Clients: measureClients, Calls: measuredCalls})
	if err != nil {
		return err
	}
	rep, _ := gen.Run(ctx)
	m.calls += rep.Calls
	m.failures += rep.Failures
	if m.errors == nil {
		m.errors = map[string]int64{}
	}
	maps.Copy(m.errors, rep.Errors)
	m.shares = append(m.shares, stepShare{percent: pct, green: rep.ByInstance[m.green.Instance], total: rep.Calls - rep.Failures})
	return nil
}
