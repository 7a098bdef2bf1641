package main

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// change is one health flip the churn wrote.
type change struct {
	svc     string
	port    int       // the instance's
	down    bool      // the check went critical: the instance leaves the passing list
	index   uint64    // the write's Consul index: an answer at this index or later holds it
	before  time.Time // just before the write
	written time.Time // the write returned: the change is in Consul
}

// churner flips random instances' checks. It keeps which ones it left
// critical for the size's next run, which flips them back rather than
// write the status they have: an unchanged check moves no index, a change
// no pipeline could see.
type churner struct {
	client *api.Client
	n      int
	down   map[[2]int]bool
}

func newChurner(client *api.Client, n int) *churner {
	return &churner{client: client, n: n, down: map[[2]int]bool{}}
}

// run flips o.rate checks a second for o.churn.
func (c *churner) run(b testing.TB, o options) []change {
	var changes []change
	tick := time.NewTicker(time.Second / time.Duration(o.rate))
	defer tick.Stop()
	end := time.Now().Add(o.churn)
	for now := range tick.C {
		if now.After(end) {
			break
		}
		changes = append(changes, c.flip(b))
	}
	return changes
}

// flip turns a random instance's check critical, or passing if it is critical.
func (c *churner) flip(b testing.TB) change {
	i, j := rand.N(c.n), rand.N(instances)
	k := [2]int{i, j}
	c.down[k] = !c.down[k]
	status := api.HealthPassing
	if c.down[k] {
		status = api.HealthCritical
	}
	before := time.Now()
	index, err := setCheck(c.client, i, j, status)
	if err != nil {
		b.Fatal(err)
	}
	return change{svc: serviceName(i), port: instancePort(i, j), down: c.down[k], index: index, before: before, written: time.Now()}
}

// setCheck writes the status of instance j of service i's check in a
// transaction, whose answer holds the check's new ModifyIndex: the index of
// the service's health answers from then on.
func setCheck(client *api.Client, i, j int, status string) (uint64, error) {
	node, id := fmt.Sprintf("node-%d", j), instanceID(i, j)
	op := &api.CheckTxnOp{Verb: api.CheckSet, Check: api.HealthCheck{Node: node, CheckID: "check-" + id, Name: "check",
		ServiceID: id, ServiceName: serviceName(i), Status: status}}
	ok, resp, _, err := client.Txn().Txn(api.TxnOps{{Check: op}}, nil)
	switch {
	case err != nil:
		return 0, err
	case !ok || len(resp.Results) != 1 || resp.Results[0].Check == nil:
		return 0, fmt.Errorf("check %s -> %s: transaction failed: %v", id, status, resp.Errors)
	}
	return resp.Results[0].Check.ModifyIndex, nil
}

// outcome is when a pipeline was seen to have rendered and applied one
// change; zero where it was not (consul-template applies nothing here).
type outcome struct{ rendered, applied time.Time }

func (o outcome) seen() bool { return !o.rendered.IsZero() || !o.applied.IsZero() }

func renderedAt(o outcome) time.Time { return o.rendered }
func appliedAt(o outcome) time.Time  { return o.applied }

func allSeen(outs []outcome) bool {
	for _, o := range outs {
		if !o.seen() {
			return false
		}
	}
	return true
}

func seenCount(outs []outcome) int {
	n := 0
	for _, o := range outs {
		if o.seen() {
			n++
		}
	}
	return n
}

// figures are p50 and p99 of a latency from two origins: the change's write
// returned (the change is in Consul) and just before the write.
type figures struct {
	fromWritten, fromBefore [2]time.Duration
	ok                      bool
}

// figuresOf is change → at(outcome) over the changes seen.
func figuresOf(changes []change, outs []outcome, at func(outcome) time.Time) figures {
	var fromWritten, fromBefore []time.Duration
	for i, chg := range changes {
		if t := at(outs[i]); !t.IsZero() {
			fromWritten = append(fromWritten, t.Sub(chg.written))
			fromBefore = append(fromBefore, t.Sub(chg.before))
		}
	}
	if len(fromWritten) == 0 {
		return figures{}
	}
	return figures{fromWritten: p50p99(fromWritten), fromBefore: p50p99(fromBefore), ok: true}
}

func (f figures) String() string {
	if !f.ok {
		return "–"
	}
	return fmt.Sprintf("%s / %s (%s / %s)", ms(f.fromWritten[0]), ms(f.fromWritten[1]), ms(f.fromBefore[0]), ms(f.fromBefore[1]))
}

// writeTimes is p50 and p99 of the writes themselves.
func writeTimes(changes []change) [2]time.Duration {
	var d []time.Duration
	for _, chg := range changes {
		d = append(d, chg.written.Sub(chg.before))
	}
	return p50p99(d)
}

func p50p99(d []time.Duration) [2]time.Duration { return [2]time.Duration{pct(d, 50), pct(d, 99)} }

// waitSeen matches the changes again after each signal on changed until
// every one is seen, abort is closed or timeout passes, and returns the
// last match.
func waitSeen(changed, abort <-chan struct{}, timeout time.Duration, match func() []outcome) []outcome {
	var outs []outcome
	waitFor(changed, abort, timeout, func() bool { outs = match(); return allSeen(outs) })
	return outs
}

// waitFor checks done after each signal on changed until it holds, abort
// is closed (nil: never) or timeout passes; it says whether done held.
func waitFor(changed, abort <-chan struct{}, timeout time.Duration, done func() bool) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for !done() {
		select {
		case <-changed:
		case <-abort:
			return done()
		case <-deadline.C:
			return done()
		}
	}
	return true
}

// signal wakes a waitFor on c (capacity 1) without blocking.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// sample is a reading of the requests a pipeline made and when it was taken.
type sample struct {
	requests int64
	at       time.Time
}

// perSecond is the request rate between two samples, over the real time between them.
func perSecond(from, to sample) float64 {
	return float64(to.requests-from.requests) / to.at.Sub(from.at).Seconds()
}

// settle lets a pipeline's start pass before its idle window: pacing, not
// waiting for an event (lbtest.Run returns once lbctl's first render is
// applied; the watch that follows fetches every service once more).
func settle(n int) { time.Sleep(2*time.Second + time.Duration(n)*time.Millisecond) }

// idleWindow is the idle window being measured: pacing.
func idleWindow(o options) { time.Sleep(o.idle) }
