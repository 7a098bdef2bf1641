package multihost

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lbctl/lbctl/internal/hosts"
)

// colours alternate deploy by deploy; so do the ports, so an old instance
// and its replacement run side by side on each app host.
var colours = []struct {
	tag  string
	port int
}{{"blue", 7000}, {"green", 7001}}

// startColour starts one instance tagged colour on every app host and waits
// until both load balancers serve them.
func startColour(t *testing.T, c *hosts.Cluster, n int) []*hosts.App {
	t.Helper()
	col := colours[n%2]
	var apps []*hosts.App
	for _, h := range c.Apps {
		apps = append(apps, c.StartApp(h, col.tag, hosts.AppOptions{Port: col.port}))
	}
	index, err := c.Passing(apps, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Served(index, []string{col.tag}, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.Event("%d %s instances passing (index %d); served by %v", len(apps), col.tag, index, res.Confirmed)
	return apps
}

// drainResult is what one app's `lbctl register` logged about its drain.
type drainResult struct {
	app       *hosts.App
	waited    string   // maintenance until every load balancer confirmed
	confirmed []string // the load balancers that confirmed
	pending   string   // the first "waiting for load balancers" line's pending list
	timedOut  bool
}

var (
	drainedRe = regexp.MustCompile(`drained: every load balancer confirmed".* waited=(\S+) confirmed="?\[([^\]]*)\]`)
	pendingRe = regexp.MustCompile(`waiting for load balancers" .*pending="?(\[[^\]]*\])`)
)

// drainAll sends SIGTERM to every app and waits until each has drained,
// stopped its greeter and exited 0. It returns what each logged, and the time
// from the first SIGTERM until the last exit. meanwhile, if any, runs right
// after the signals (a fault in the middle of the drains).
func drainAll(t *testing.T, apps []*hosts.App, within time.Duration, meanwhile ...func()) ([]drainResult, time.Duration) {
	t.Helper()
	start := time.Now()
	for _, a := range apps {
		a.Drain()
	}
	for _, f := range meanwhile {
		f()
	}
	var out []drainResult
	for _, a := range apps {
		if err := a.Proc.Wait(within); err != nil {
			t.Fatalf("%v\n%s", err, a.Proc.Tail(3000))
		}
		if code := a.Proc.ExitCode(); code != 0 {
			t.Errorf("%s exited %d\n%s", a.ID, code, a.Proc.Tail(3000))
		}
		out = append(out, parseDrain(a))
	}
	return out, time.Since(start)
}

func parseDrain(a *hosts.App) drainResult {
	r := drainResult{app: a}
	log := a.Proc.Output()
	r.timedOut = strings.Contains(log, "drain timed out before every load balancer confirmed")
	if m := drainedRe.FindStringSubmatch(log); m != nil {
		r.waited, r.confirmed = m[1], strings.Fields(m[2])
	}
	if m := pendingRe.FindStringSubmatch(log); m != nil {
		r.pending = m[1]
	}
	return r
}

func (r drainResult) String() string {
	if r.timedOut {
		return fmt.Sprintf("%s: drain TIMED OUT", r.app.ID)
	}
	pending := r.pending
	if pending == "" {
		pending = "none, confirmed at the first look"
	}
	return fmt.Sprintf("%s: drained in %s, confirmed by %v (first look: pending %s)", r.app.ID, r.waited, r.confirmed, pending)
}

// expectConfirmedBy fails unless every drain ended with exactly these load
// balancers' confirmations, none by timeout.
func expectConfirmedBy(t *testing.T, drains []drainResult, lbs ...string) {
	t.Helper()
	for _, d := range drains {
		if d.timedOut || !slices.Equal(d.confirmed, lbs) {
			t.Errorf("%s: want confirmed by %v\n%s", d, lbs, d.app.Proc.Tail(3000))
		}
	}
}
