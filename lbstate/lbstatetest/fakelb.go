// Package lbstatetest has a stand-in load balancer for drain tests: it
// watches a service the way lbctl run's catalog watcher does and publishes,
// through a real lbstate.Publisher, the index of each answer it "applies".
package lbstatetest

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/lbctl/lbctl/catalog"
	"github.com/lbctl/lbctl/internal/view"
	"github.com/lbctl/lbctl/lbstate"
)

// FakeLB is a load balancer stand-in.
type FakeLB struct {
	Publisher *lbstate.Publisher
	cancel    context.CancelFunc
	done      chan struct{}
}

// Start runs a fake load balancer id that watches the passing instances of
// service (blocking health queries) and, for each new answer, calls apply (if
// not nil; it may block, as a slow reload would) and then publishes the
// answer's index. It stops when the test ends or Stop is called.
func Start(t testing.TB, client *api.Client, id, service string, log *slog.Logger, apply func([]*api.ServiceEntry)) *FakeLB {
	ctx, cancel := context.WithCancel(context.Background())
	lb := &FakeLB{Publisher: lbstate.NewPublisher(client, id, log), cancel: cancel, done: make(chan struct{})}
	pubDone := make(chan struct{})
	go func() { lb.Publisher.Run(ctx); close(pubDone) }()
	go func() {
		defer close(lb.done)
		defer func() { <-pubDone }()
		lb.watch(ctx, client, service, apply)
	}()
	t.Cleanup(lb.Stop)
	return lb
}

// Stop ends the fake load balancer; its published state disappears with its session.
func (lb *FakeLB) Stop() {
	lb.cancel()
	<-lb.done
}

func (lb *FakeLB) watch(ctx context.Context, client *api.Client, service string, apply func([]*api.ServiceEntry)) {
	v := view.New(func(ctx context.Context, index uint64) ([]*api.ServiceEntry, uint64, error) {
		q := (&api.QueryOptions{WaitIndex: index, WaitTime: time.Minute}).WithContext(ctx)
		entries, meta, err := client.Health().Service(service, "", true, q)
		if err != nil {
			return nil, 0, err
		}
		return entries, meta.LastIndex, nil
	}, nil)
	v.MaxBackoff = 50 * time.Millisecond
	v.Run(ctx, func(entries []*api.ServiceEntry, index uint64) error {
		if apply != nil {
			apply(entries)
		}
		lb.Publisher.Publish(ctx, map[catalog.Query]uint64{{Service: service}: index})
		return nil
	})
}

// PublishStale publishes index for service once, as a load balancer that
// stopped applying changes would have, and keeps its session alive until
// stop (a load balancer dying: its state disappears) or the test's end.
func PublishStale(t testing.TB, client *api.Client, id, service string, index uint64, log *slog.Logger) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := lbstate.NewPublisher(client, id, log)
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	if err := p.Publish(ctx, map[catalog.Query]uint64{{Service: service}: index}); err != nil {
		t.Fatalf("publish stale state: %v", err)
	}
	return stop
}
