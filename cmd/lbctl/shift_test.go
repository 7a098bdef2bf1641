package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/lbctl/lbctl/internal/testrig"
	"github.com/lbctl/lbctl/shift"
)

// shiftRig is a real Consul with greeter instances tagged blue (v1) and
// green (v2), and an lbctl.yaml pointing at it.
func shiftRig(t *testing.T) (*testrig.Consul, string) {
	t.Helper()
	c := testrig.StartConsul(t)
	for _, g := range []struct{ name, version, tag string }{{"blue1", "v1", "blue"}, {"green1", "v2", "green"}} {
		c.Register(testrig.StartGreeter(t, g.name, g.version).Registration("greeter", g.tag))
	}
	cfg := writeFile(t, t.TempDir(), "lbctl.yaml", fmt.Sprintf(
		"consul: {address: %q}\nservices:\n  - {name: greeter, tag: blue, listen: 5000, shift: true}\n", c.Addr))
	return c, cfg
}

func shiftOpts(cfgPath string) (*shiftOptions, *bytes.Buffer) {
	var out bytes.Buffer
	return &shiftOptions{
		globalOptions: &globalOptions{configPath: cfgPath, logLevel: "error", logFormat: "text"},
		to:            "green", steps: []int{50, 100}, interval: 100 * time.Millisecond,
		maxErrorRate: 0.01, minCalls: 20, stdout: &out,
	}, &out
}

func TestShiftCommandRunsToDoneWithPlainLines(t *testing.T) {
	c, cfg := shiftRig(t)
	o, out := shiftOpts(cfg) // --from defaults to the config's tag: blue
	if err := runShift(context.Background(), o, "greeter"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, want := range []string{"step 1/2: blue 50% / green 50%", "step 2/2 passed: blue 0% / green 100%", "health ok: 1/1 green instances passing", "done: greeter serves blue 0% / green 100% (done, step 2/2)"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out.String(), "\r") {
		t.Errorf("redrew in place when not on a terminal:\n%q", out)
	}
	st, err := shift.ReadStatus(context.Background(), c.Client, "greeter")
	if err != nil || st.Split.State != shift.Done || st.Holder != nil {
		t.Fatalf("status after: %+v, %v", st, err)
	}
	o, out = shiftOpts(cfg)
	if err := runShiftStatus(context.Background(), o, "greeter"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"greeter: blue 0% / green 100% (done, step 2/2)", "greeter-green1", "version v2", "version v1"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
}

func TestShiftCommandRefusesBadInput(t *testing.T) {
	c, cfg := shiftRig(t)
	cases := []struct {
		name    string
		service string
		edit    func(*shiftOptions)
		code    int
		says    string
	}{
		{"unknown service", "nosuch", func(o *shiftOptions) { o.from = "blue" }, exitRefused, `unknown service "nosuch"`},
		{"tag with no healthy instance", "greeter", func(o *shiftOptions) { o.to = "purple" }, exitRefused, "tagged purple"},
		{"steps not increasing", "greeter", func(o *shiftOptions) { o.steps = []int{50, 10} }, 2, "steps must increase: 10% follows 50%"},
		{"step over 100", "greeter", func(o *shiftOptions) { o.steps = []int{10, 150} }, 2, "1-100"},
		{"no --to", "greeter", func(o *shiftOptions) { o.to = "" }, 2, "--to is required"},
	}
	for _, tc := range cases {
		o, _ := shiftOpts(cfg)
		tc.edit(o)
		err := runShift(context.Background(), o, tc.service)
		if exitCode(err) != tc.code || !strings.Contains(fmt.Sprint(err), tc.says) {
			t.Errorf("%s: exit %d (%v), want %d saying %q", tc.name, exitCode(err), err, tc.code, tc.says)
		}
	}
	if pairs, _, _ := c.Client.KV().List(shift.SplitPrefix, nil); len(pairs) != 0 {
		t.Fatalf("refused shifts wrote %d splits", len(pairs))
	}
}

func TestSecondShiftIsRefusedWithWhoHoldsIt(t *testing.T) {
	c, cfg := shiftRig(t)
	holder := shift.Holder{User: "alice", Host: "deploy-box", PID: 4242, From: "blue", To: "green", Steps: []int{10, 100}, Since: time.Now()}
	lock, err := shift.Acquire(context.Background(), c.Client, "greeter", holder)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Release()
	o, _ := shiftOpts(cfg)
	err = runShift(context.Background(), o, "greeter")
	if exitCode(err) != exitHeld || !strings.Contains(err.Error(), "alice@deploy-box (pid 4242)") {
		t.Fatalf("exit %d: %v; want %d naming alice@deploy-box (pid 4242)", exitCode(err), err, exitHeld)
	}
}

func TestAbortPutsTrafficBackAndStopsTheRunningShift(t *testing.T) {
	c, cfg := shiftRig(t)
	ctx := context.Background()
	o, out := shiftOpts(cfg)
	if err := runShiftAbort(ctx, o, "greeter"); exitCode(err) != 1 || !strings.Contains(err.Error(), "nothing to abort") {
		t.Fatalf("abort with no shift: %v", err)
	}
	o, out = shiftOpts(cfg)
	o.steps, o.interval = []int{10, 100}, time.Hour // holds until aborted
	errc := make(chan error, 1)
	go func() { errc <- runShift(ctx, o, "greeter") }()
	testrig.WaitFor(t, 10*time.Second, "the shift to reach 10%", func() error {
		s, _, err := shift.NewKV(c.Client).Load(ctx, "greeter")
		if err != nil || s.State != shift.Running {
			return fmt.Errorf("split %s, %v", s, err)
		}
		return nil
	})
	a, aout := shiftOpts(cfg)
	if err := runShiftAbort(ctx, a, "greeter"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(aout.String(), "aborted: greeter serves blue 100% / green 0% (aborted") {
		t.Errorf("abort printed:\n%s", aout)
	}
	select {
	case err := <-errc:
		if exitCode(err) != exitAborted {
			t.Fatalf("the running shift ended with exit %d: %v\n%s", exitCode(err), err, out)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the running shift did not stop after the abort")
	}
	s, _, _ := shift.NewKV(c.Client).Load(ctx, "greeter")
	if s.State != shift.Aborted || s.FromPercent() != 100 {
		t.Fatalf("KV after abort: %s", s)
	}
}

func TestInterruptedShiftLeavesTheLastSplit(t *testing.T) {
	c, cfg := shiftRig(t)
	ctx, cancel := context.WithCancel(context.Background())
	o, _ := shiftOpts(cfg)
	o.steps, o.interval = []int{10, 100}, time.Hour
	errc := make(chan error, 1)
	go func() { errc <- runShift(ctx, o, "greeter") }()
	testrig.WaitFor(t, 10*time.Second, "the shift to reach 10%", func() error {
		if s, _, _ := shift.NewKV(c.Client).Load(context.Background(), "greeter"); s.State != shift.Running {
			return errors.New("not yet")
		}
		return nil
	})
	cancel() // Ctrl-C
	if err := <-errc; exitCode(err) != exitInterrupted {
		t.Fatalf("exit %d: %v", exitCode(err), err)
	}
	s, _, _ := shift.NewKV(c.Client).Load(context.Background(), "greeter")
	if s.State != shift.Interrupted || s.ToPercent() != 10 {
		t.Fatalf("KV after Ctrl-C: %s, want 10%% green, interrupted", s)
	}
	if h, _ := shift.CurrentHolder(context.Background(), c.Client, "greeter"); h != nil {
		t.Fatalf("lock still held by %s", h)
	}
}
