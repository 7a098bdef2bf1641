package shift

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/lbctl/lbctl/accesslog"
	"github.com/lbctl/lbctl/internal/testrig"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func TestSecondShiftIsRefusedNamingTheHolder(t *testing.T) {
	c := testrig.StartConsul(t)
	ctx := context.Background()
	first := Holder{User: "alice", Host: "laptop", PID: 42, From: "blue", To: "green", Steps: []int{10, 100}, Since: time.Now()}
	lock, err := Acquire(ctx, c.Client, "greeter", first)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Acquire(ctx, c.Client, "greeter", Holder{User: "bob", Host: "ci", PID: 7})
	var held *HeldError
	if !errors.As(err, &held) || !errors.Is(err, ErrHeld) {
		t.Fatalf("second acquire: %v, want a HeldError", err)
	}
	if held.Holder.User != "alice" || !strings.Contains(err.Error(), "alice@laptop (pid 42)") {
		t.Fatalf("error does not name the holder: %v", err)
	}
	if h, err := CurrentHolder(ctx, c.Client, "greeter"); err != nil || h == nil || h.PID != 42 {
		t.Fatalf("CurrentHolder = %+v, %v", h, err)
	}
	// Another service is not blocked.
	other, err := Acquire(ctx, c.Client, "other", Holder{User: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	other.Release()
	if err := lock.Release(); err != nil {
		t.Fatal(err)
	}
	testrig.WaitFor(t, 10*time.Second, "the lock to be free again", func() error {
		l, err := Acquire(ctx, c.Client, "greeter", Holder{User: "bob"})
		if err != nil {
			return err
		}
		return l.Release()
	})
}

func TestKVSavesWithCheckAndSet(t *testing.T) {
	c := testrig.StartConsul(t)
	ctx := context.Background()
	kv := NewKV(c.Client)
	s := Split{Service: "greeter", From: "blue", To: "green", State: Running}.At(10)
	i1, err := kv.Save(ctx, s, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Save(ctx, s.At(50), 0); !errors.Is(err, ErrConflict) {
		t.Fatalf("save over an existing key with index 0: %v", err)
	}
	i2, err := kv.Save(ctx, s.At(50), i1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Save(ctx, s.At(100), i1); !errors.Is(err, ErrConflict) {
		t.Fatalf("save with a stale index: %v", err)
	}
	got, index, err := kv.Load(ctx, "greeter")
	if err != nil || index != i2 || got.ToPercent() != 50 {
		t.Fatalf("load: %s at %d (want %d), %v", got, index, i2, err)
	}
	if _, err := kv.Save(ctx, Split{Service: "greeter", From: "blue", To: "x;y", State: Running}.At(1), i2); !errors.Is(err, ErrInvalidSplit) {
		t.Fatalf("saved an invalid split: %v", err)
	}
}

func TestWatcherSendsValidSplitsOnChange(t *testing.T) {
	c := testrig.StartConsul(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	kv := NewKV(c.Client)
	c.Client.KV().Put(&api.KVPair{Key: SplitKey("broken"), Value: []byte(`{"service":"broken","from":"a;","to":"b"}`)}, nil)
	w := NewWatcher(c.Client, quiet)
	out := make(chan map[string]Split, 1)
	go w.Run(ctx, out)
	if first := <-out; len(first) != 0 {
		t.Fatalf("first: %v, want no valid splits", first)
	}
	if _, err := kv.Save(ctx, Split{Service: "greeter", From: "blue", To: "green", State: Running}.At(10), 0); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-out:
		if got["greeter"].ToPercent() != 10 || len(got) != 1 {
			t.Fatalf("got %v", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no update after a split was written")
	}
}

func TestCheckPlanRefusesBadInput(t *testing.T) {
	c := testrig.StartConsul(t)
	blue := testrig.StartGreeter(t, "blue1", "v1")
	c.Register(blue.Registration("greeter", "blue"))
	sick := testrig.StartGreeter(t, "red1", "v3")
	reg := sick.Registration("greeter", "red")
	reg.Check = &api.AgentServiceCheck{TTL: "1m", Status: api.HealthCritical}
	c.Register(reg)
	ok := Plan{Service: "greeter", From: "blue", To: "green", Steps: []int{10, 50, 100}, Interval: time.Second}
	cases := []struct {
		name string
		edit func(*Plan)
		want error
		says string
	}{
		{"unknown service", func(p *Plan) { p.Service = "nosuch" }, ErrUnknownService, `"nosuch"`},
		{"to tag with no instance", func(p *Plan) {}, ErrNoHealthy, "tagged green"},
		{"to tag not passing", func(p *Plan) { p.To = "red" }, ErrNoHealthy, "greeter-red1"},
		{"from tag not passing", func(p *Plan) { p.From, p.To = "red", "blue" }, ErrNoHealthy, "tagged red (from)"},
		{"steps not increasing", func(p *Plan) { p.Steps = []int{50, 10, 100} }, ErrBadPlan, "steps must increase"},
		{"same tags", func(p *Plan) { p.To = "blue" }, ErrBadPlan, "both"},
	}
	for _, tc := range cases {
		p := ok
		tc.edit(&p)
		err := CheckPlan(context.Background(), c.Client, p)
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s: got %v, want %v saying %q", tc.name, err, tc.want, tc.says)
		}
	}
}

func putStats(t *testing.T, c *testrig.Consul, lb, boot, tag string, counts accesslog.Counts) {
	t.Helper()
	data, _ := json.Marshal(accesslog.Stats{LB: lb, Service: "greeter", Boot: boot, Tags: map[string]accesslog.Counts{tag: counts}})
	if _, err := c.Client.KV().Put(&api.KVPair{Key: accesslog.StatsKey(lb, "greeter"), Value: data}, nil); err != nil {
		t.Fatal(err)
	}
}

func TestErrorRateGateSumsLiveLoadBalancersSinceTheStepBegan(t *testing.T) {
	c := testrig.StartConsul(t)
	ctx := context.Background()
	putStats(t, c, "lb-a", "1", "green", accesslog.Counts{"0": 1000, "14": 500}) // old errors: before the step
	putStats(t, c, "lb-b", "1", "green", accesslog.Counts{"0": 10})
	putStats(t, c, "lb-c", "1", "blue", accesslog.Counts{"0": 70}) // reporting, no call to green yet
	g := &ErrorRateGate{Client: c.Client, Service: "greeter", Tag: "green", Max: 0.05, MinCalls: 100}
	if err := g.Begin(ctx); err != nil {
		t.Fatal(err)
	}
	putStats(t, c, "lb-a", "1", "green", accesslog.Counts{"0": 1040, "14": 502})
	putStats(t, c, "lb-b", "2", "green", accesslog.Counts{"0": 8, "13": 1}) // lb-b restarted: counts from zero
	v, err := g.Check(ctx, false)
	if err != nil || !v.Pass || !strings.Contains(v.Detail, "3 of 51 calls") {
		t.Fatalf("during the hold (51 < 100 calls): %+v, %v", v, err)
	}
	v, _ = g.Check(ctx, true)
	if v.Pass || !strings.Contains(v.Detail, "5.88% errors (3 of 51 calls to green, 3 load balancers") {
		t.Fatalf("at the end: %+v", v)
	}
}
