package accesslog

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/lbctl/lbctl/catalog"
)

// Collector is what each lbctl run runs for the error-rate gate: it tails
// the access logs, counts calls per service, tag and version, and publishes
// the counts under StatsKey(LB, service).
type Collector struct {
	Client *api.Client
	// LB names this load balancer in KV (its hostname, say).
	LB string
	// Paths are the access logs the built-in template has nginx write.
	Paths []string
	// Instances are the snapshots of the load balancer's own health watch
	// (catalog.Watcher.OnSnapshot; capacity 1, newest wins): whose instances
	// own which upstream addresses. The collector keeps no watch of its own,
	// so Consul is not asked the same queries twice.
	Instances <-chan catalog.Snapshot
	// Poll is how often logs are read; Period how often counts are published.
	Poll, Period time.Duration
	Log          *slog.Logger
	// Counts receives the counts; nil makes a new Counter.
	Counts *Counter
}

// Run collects and publishes until ctx ends.
func (c *Collector) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if c.Counts == nil {
		c.Counts = NewCounter()
	}
	log := c.Log.With("component", "accesslog")
	errs := make(chan error, len(c.Paths)+2)
	var wg sync.WaitGroup
	run := func(f func() error) {
		wg.Go(func() {
			if err := f(); err != nil {
				errs <- err
				cancel()
			}
		})
	}
	run(func() error { return c.followInstances(ctx) })
	for _, p := range c.Paths {
		t := &Tailer{Path: p, Poll: c.Poll}
		run(func() error { return t.Run(ctx, c.line(log)) })
	}
	pub := &Publisher{Client: c.Client, LB: c.LB, Counter: c.Counts, Period: c.Period, Log: c.Log}
	run(func() error { return pub.Run(ctx) })
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return errors.Join(all...)
}

// followInstances keeps the counter's address directory current.
func (c *Collector) followInstances(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case s := <-c.Instances:
			c.Counts.SetInstances(s)
		}
	}
}

// line parses and counts one log line; a bad line is logged at debug.
func (c *Collector) line(log *slog.Logger) func([]byte) {
	return func(l []byte) {
		r, err := ParseLine(l)
		if err != nil {
			log.Debug("skipping an access log line", "err", err)
			return
		}
		c.Counts.Add(r)
	}
}
