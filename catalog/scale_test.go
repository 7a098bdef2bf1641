package catalog_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/hashicorp/consul/api"

	"github.com/lbctl/lbctl/catalog"
	"github.com/lbctl/lbctl/catalog/catalogtest"
	"github.com/lbctl/lbctl/internal/testrig"
)

// 300 services on an agent with Consul's default limits (200 connections per
// client address): every one is rendered from the start on a handful of
// connections, with no request refused, and health changes, registrations
// and deregistrations are followed with the index of the answer rendered.
func TestWatchHundredsOfServicesOnDefaultLimits(t *testing.T) {
	const n = 300
	c := testrig.StartConsul(t)
	name := func(i int) string { return fmt.Sprintf("svc-%03d", i) }
	var regs sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range n {
		regs.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			reg := &api.AgentServiceRegistration{ID: name(i) + "-1", Name: name(i), Address: "127.0.0.1", Port: 10000 + i}
			if i%3 != 0 { // a third have no check: only the services feed sees them change
				reg.Check = &api.AgentServiceCheck{CheckID: name(i), TTL: "10m", Status: api.HealthPassing}
			}
			c.Register(reg)
		})
	}
	regs.Wait()

	var conns catalogtest.Counter
	client, err := conns.Client(c.Addr)
	if err != nil {
		t.Fatal(err)
	}
	var queries []catalog.Query
	for i := range n {
		queries = append(queries, catalog.Query{Service: name(i)})
	}
	w := catalog.NewWatcher(client, queries, quietLog())
	var failures atomic.Int64
	var firstErr atomic.Value
	w.OnError = func(q catalog.Query, err error) {
		if failures.Add(1) == 1 {
			firstErr.Store(fmt.Sprintf("%s: %v", q, err))
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	snaps := make(chan catalog.Snapshot, 1)
	go w.Run(ctx, snaps)

	one := func(s catalog.Snapshot) error {
		for _, q := range queries {
			if len(s.Instances[q]) != 1 {
				return fmt.Errorf("%s has %d instances, want 1", q, len(s.Instances[q]))
			}
		}
		return nil
	}
	nextSnap(t, snaps, one)

	// healthIndex is what a draining instance takes as its target.
	healthIndex := func(svc string) uint64 {
		_, meta, err := c.Client.Health().Service(svc, "", true, nil)
		if err != nil {
			t.Fatal(err)
		}
		return meta.LastIndex
	}
	// reaches waits for svc to show want instances at an index at least the
	// health query's now, the index being that of the answer rendered.
	reaches := func(svc string, want int) {
		t.Helper()
		target := healthIndex(svc)
		q := catalog.Query{Service: svc}
		nextSnap(t, snaps, func(s catalog.Snapshot) error {
			if got := len(s.Instances[q]); got != want || s.Indexes[q] < target {
				return fmt.Errorf("%s: %d instances at %d, want %d at %d or later", svc, got, s.Indexes[q], want, target)
			}
			return nil
		})
	}

	// A health change (the checks feed names the service).
	if err := c.Client.Agent().UpdateTTL(name(7), "down", api.HealthCritical); err != nil {
		t.Fatal(err)
	}
	reaches(name(7), 0)
	// A drain: maintenance of an instance.
	if err := c.Client.Agent().EnableServiceMaintenance(name(8)+"-1", "drain"); err != nil {
		t.Fatal(err)
	}
	reaches(name(8), 0)
	// A second instance of a service without checks, then gone again (the
	// services feed cannot name the service: a sweep finds it).
	c.Register(&api.AgentServiceRegistration{ID: name(9) + "-2", Name: name(9), Address: "127.0.0.1", Port: 20009})
	reaches(name(9), 2)
	c.Deregister(name(9) + "-2")
	reaches(name(9), 1)
	// Back to passing.
	if err := c.Client.Agent().UpdateTTL(name(7), "up", api.HealthPassing); err != nil {
		t.Fatal(err)
	}
	reaches(name(7), 1)
	// A warning is not passing either (the warning checks feed names it).
	if err := c.Client.Agent().UpdateTTL(name(7), "slow", api.HealthWarning); err != nil {
		t.Fatal(err)
	}
	reaches(name(7), 0)
	if err := c.Client.Agent().UpdateTTL(name(7), "up", api.HealthPassing); err != nil {
		t.Fatal(err)
	}
	reaches(name(7), 1)

	if f := failures.Load(); f != 0 {
		t.Errorf("%d failed Consul requests, first %v", f, firstErr.Load())
	}
	if most := conns.Most.Load(); most > 8 {
		t.Errorf("%d connections to the agent at once, want at most 8", most)
	}
	t.Logf("at most %d connections to the agent at once", conns.Most.Load())

	// Once (lbctl render --once) renders them all too.
	snap, err := catalog.NewWatcher(client, queries, quietLog()).Once(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Instances) != n {
		t.Fatalf("Once: %d queries, want %d", len(snap.Instances), n)
	}
}
