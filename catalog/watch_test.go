package catalog_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/lbctl/lbctl/catalog"
	"github.com/lbctl/lbctl/internal/testrig"
)

func quietLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

func register(c *testrig.Consul, id string, port int, tags ...string) {
	c.Register(&api.AgentServiceRegistration{ID: id, Name: "greeter", Address: "127.0.0.1", Port: port, Tags: tags})
}

// next waits for a snapshot whose instances for q satisfy want.
func next(t *testing.T, snaps chan catalog.Snapshot, q catalog.Query, want func([]catalog.Instance) error) catalog.Snapshot {
	t.Helper()
	return nextSnap(t, snaps, func(s catalog.Snapshot) error { return want(s.Instances[q]) })
}

// nextSnap waits for a snapshot that satisfies want.
func nextSnap(t *testing.T, snaps chan catalog.Snapshot, want func(catalog.Snapshot) error) catalog.Snapshot {
	t.Helper()
	deadline := time.After(10 * time.Second)
	var lastErr error
	for {
		select {
		case s := <-snaps:
			if lastErr = want(s); lastErr == nil {
				return s
			}
		case <-deadline:
			t.Fatalf("no snapshot as wanted within 10s: %v", lastErr)
		}
	}
}

func ids(n int) func([]catalog.Instance) error {
	return func(in []catalog.Instance) error {
		if len(in) != n {
			return fmt.Errorf("%d instances, want %d", len(in), n)
		}
		return nil
	}
}

func TestWatchFollowsRegistrations(t *testing.T) {
	c := testrig.StartConsul(t)
	all := catalog.Query{Service: "greeter"}
	blue := catalog.Query{Service: "greeter", Tag: "blue"}
	w := catalog.NewWatcher(c.Client, []catalog.Query{all, blue, all}, quietLog())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	snaps := make(chan catalog.Snapshot, 1)
	go w.Run(ctx, snaps)

	// Nothing registered yet: a snapshot with zero instances, not silence.
	next(t, snaps, all, ids(0))
	register(c, "greeter-b", 7002, "green")
	register(c, "greeter-a", 7001, "blue")
	s := nextSnap(t, snaps, func(s catalog.Snapshot) error {
		if err := ids(2)(s.Instances[all]); err != nil {
			return err
		}
		if in := s.Instances[blue]; len(in) != 1 || in[0].ID != "greeter-a" {
			return fmt.Errorf("blue = %+v, want only greeter-a", in)
		}
		return nil
	})
	if s.Instances[all][0].ID != "greeter-a" || s.Index == 0 || s.Indexes[blue] == 0 || s.Indexes[blue] > s.Index {
		t.Fatalf("instances not sorted by ID or no index: %+v", s)
	}
	c.Deregister("greeter-a")
	next(t, snaps, all, ids(1))
}

func TestWatchSkipsFailingInstances(t *testing.T) {
	c := testrig.StartConsul(t)
	c.Register(&api.AgentServiceRegistration{ID: "sick", Name: "greeter", Address: "127.0.0.1", Port: 7003,
		Check: &api.AgentServiceCheck{TTL: "1m", Status: api.HealthCritical}})
	register(c, "well", 7004)
	q := catalog.Query{Service: "greeter"}
	snap, err := catalog.NewWatcher(c.Client, []catalog.Query{q}, quietLog()).Once(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if in := snap.Instances[q]; len(in) != 1 || in[0].ID != "well" {
		t.Fatalf("got %+v, want only the passing instance", in)
	}
}

func TestOnceWithUnreachableConsulFails(t *testing.T) {
	client, err := api.NewClient(&api.Config{Address: testrig.LoopbackAddr(testrig.FreePort(t)), Token: "secret-token"})
	if err != nil {
		t.Fatal(err)
	}
	w := catalog.NewWatcher(client, []catalog.Query{{Service: "greeter"}}, quietLog())
	w.MinBackoff, w.MaxBackoff = time.Millisecond, 10*time.Millisecond
	// Once retries until its context ends; end it at the first failure.
	failed := make(chan struct{})
	var once sync.Once
	w.OnError = func(catalog.Query, error) { once.Do(func() { close(failed) }) }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	res := make(chan error, 1)
	go func() { _, err := w.Once(ctx); res <- err }()
	select {
	case <-failed:
	case <-time.After(30 * time.Second):
		t.Fatal("no failed Consul request in 30s")
	}
	cancel()
	err = <-res
	if err == nil || !strings.Contains(err.Error(), "consul did not answer") || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("err = %v, want consul did not answer: ... connection refused", err)
	}
	if strings.Contains(err.Error(), "secret-token") {
		t.Fatalf("token leaked into the error: %v", err)
	}
}

// A change that leaves the passing instances as they were (an already failing
// instance put into maintenance) still gives a snapshot at the new index, so
// load balancers can confirm they serve it (the drain protocol waits for that).
func TestWatchSendsNewIndexWithSameInstances(t *testing.T) {
	c := testrig.StartConsul(t)
	register(c, "well", 7001)
	c.Register(&api.AgentServiceRegistration{ID: "sick", Name: "greeter", Address: "127.0.0.1", Port: 7002,
		Check: &api.AgentServiceCheck{TTL: "1m", Status: api.HealthCritical}})
	q := catalog.Query{Service: "greeter"}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	snaps := make(chan catalog.Snapshot, 1)
	go catalog.NewWatcher(c.Client, []catalog.Query{q}, quietLog()).Run(ctx, snaps)
	first := next(t, snaps, q, ids(1))

	if err := c.Client.Agent().EnableServiceMaintenance("sick", "drain"); err != nil {
		t.Fatal(err)
	}
	nextSnap(t, snaps, func(s catalog.Snapshot) error {
		if err := ids(1)(s.Instances[q]); err != nil {
			return err
		}
		if s.Indexes[q] <= first.Indexes[q] {
			return fmt.Errorf("index %d, want past %d", s.Indexes[q], first.Indexes[q])
		}
		return nil
	})
}
