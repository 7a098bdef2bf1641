package registrar

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/lbctl/lbctl/internal/backoff"
	"github.com/lbctl/lbctl/internal/view"
	"github.com/lbctl/lbctl/lbstate"
)

// Drain modes: how an instance is taken out of load balancing.
const (
	// DrainMaintenance keeps the instance registered but critical.
	DrainMaintenance = "maintenance"
	// DrainDeregister removes it at once.
	DrainDeregister = "deregister"
)

// DrainOptions are one drain's settings.
type DrainOptions struct {
	// Mode is DrainMaintenance or DrainDeregister.
	Mode string
	// Reason is shown in Consul for maintenance.
	Reason string
	// Timeout bounds the whole drain (taking the instance out and waiting for
	// the load balancers); 0 bounds it by ctx only.
	Timeout time.Duration
	// Waiter waits for the load balancers.
	Waiter *lbstate.Waiter
}

// Drain takes the instance out of load balancing, then waits until every live
// load balancer routing to it has confirmed that change (docs/drain.md). A
// timeout is not an error: the result says TimedOut and names the pending
// load balancers, and Drain logs that it proceeds. The error says what could
// not be done (the caller logs it and stops the app anyway).
func (r *Registrar) Drain(ctx context.Context, d DrainOptions) (lbstate.Result, error) {
	start := time.Now()
	dctx, cancel := ctx, context.CancelFunc(func() {})
	if d.Timeout > 0 {
		dctx, cancel = context.WithTimeout(ctx, d.Timeout)
	}
	defer cancel()
	index, err := r.TakeOutOfService(dctx, d.Mode, d.Reason)
	if err != nil {
		return lbstate.Result{TimedOut: dctx.Err() != nil, Waited: time.Since(start)}, err
	}
	r.log.Info("out of service; waiting for load balancers to confirm", "mode", d.Mode, "index", index)
	target := lbstate.Target{Service: r.svc.Name, Tags: r.svc.Tags, Index: index}
	remaining := time.Duration(0)
	if deadline, ok := dctx.Deadline(); ok {
		remaining = max(time.Until(deadline), time.Millisecond)
	}
	res, err := d.Waiter.Wait(ctx, target, remaining)
	res.Waited = time.Since(start)
	if err != nil {
		return res, fmt.Errorf("drain %s: %w", r.svc.ID, err)
	}
	r.logDrained(res)
	return res, nil
}

func (r *Registrar) logDrained(res lbstate.Result) {
	if res.TimedOut {
		args := []any{"waited", res.Waited.Round(time.Millisecond), "pending", res.Pending, "confirmed", res.Confirmed}
		if res.LastErr != nil {
			args = append(args, "err", res.LastErr)
		}
		r.log.Warn("drain timed out before every load balancer confirmed; proceeding", args...)
		return
	}
	r.log.Info("drained: every load balancer confirmed", "waited", res.Waited.Round(time.Millisecond),
		"confirmed", res.Confirmed, "ignored", res.Ignored)
}

// TakeOutOfService puts the instance into maintenance (or deregisters it,
// per mode) and returns the Consul index of the first health answer for its
// service in which the change shows: a load balancer that has applied that
// index or a later one no longer sends the instance new calls. Failed writes
// are retried until ctx ends; an instance the agent no longer has counts as
// deregistered.
func (r *Registrar) TakeOutOfService(ctx context.Context, mode, reason string) (uint64, error) {
	if mode != DrainMaintenance && mode != DrainDeregister {
		return 0, fmt.Errorf("drain mode %q: want %s or %s", mode, DrainMaintenance, DrainDeregister)
	}
	gone, err := r.markOutOfService(ctx, mode, reason)
	if err != nil {
		return 0, err
	}
	var nudge func(context.Context) error
	if !gone {
		nudge = r.resync
	}
	return r.waitForCatalog(ctx, nudge, func(entries []*api.ServiceEntry) bool { return r.outOfService(entries, gone) })
}

// ResyncInterval is how long a drain waits for the servers to show the
// instance in maintenance before it asks the agent to sync again (resync).
const ResyncInterval = 2 * time.Second

// resync makes the agent send its changes to the servers again. A Consul
// agent does not retry a change whose sync failed (say, the server it sent
// it to died: a leader killed in the middle of a deploy) until its next
// anti-entropy run, a minute or more later, so a drain would wait out its
// timeout. Registering the same definition again, without replacing checks,
// keeps the maintenance check and every check's status, and makes the agent
// sync what it has not synced yet, the maintenance among it.
func (r *Registrar) resync(ctx context.Context) error {
	return r.client.Agent().ServiceRegisterOpts(r.svc.registration(), api.ServiceRegisterOpts{}.WithContext(ctx))
}

// markOutOfService makes the agent write, retrying until it takes it or ctx
// ends. gone says the instance is (or already was) deregistered.
func (r *Registrar) markOutOfService(ctx context.Context, mode, reason string) (gone bool, err error) {
	b := backoff.New(50*time.Millisecond, time.Second)
	for {
		if mode == DrainMaintenance {
			err = SetMaintenance(ctx, r.client, r.svc.ID, true, reason)
		} else {
			err = r.Deregister(ctx)
		}
		switch {
		case err == nil:
			return mode == DrainDeregister, nil
		case isNotFound(err):
			r.log.Warn("the agent no longer has the instance; waiting for the catalog to drop it", "err", err)
			return true, nil
		}
		r.log.Warn("taking the instance out of service failed; retrying", "err", err)
		if werr := b.Wait(ctx); werr != nil {
			return false, fmt.Errorf("take %s out of service: %w (last error: %w)", r.svc.ID, werr, err)
		}
	}
}

// outOfService reports whether the servers' health answer shows the change:
// the instance gone, or (when not gone) its maintenance check critical.
func (r *Registrar) outOfService(entries []*api.ServiceEntry, gone bool) bool {
	i := slices.IndexFunc(entries, func(e *api.ServiceEntry) bool { return e.Service.ID == r.svc.ID })
	if gone || i < 0 {
		return i < 0
	}
	maint := "_service_maintenance:" + r.svc.ID
	return slices.ContainsFunc(entries[i].Checks, func(c *api.HealthCheck) bool {
		return c.CheckID == maint && c.Status == api.HealthCritical
	})
}

// waitForCatalog runs blocking health queries for the service until done
// says the answer shows what we wait for, and returns that answer's index.
// While it waits, nudge (when set) runs every ResyncInterval.
func (r *Registrar) waitForCatalog(ctx context.Context, nudge func(context.Context) error, done func([]*api.ServiceEntry) bool) (uint64, error) {
	if nudge != nil {
		nctx, stop := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() { r.nudgeEvery(nctx, ResyncInterval, nudge) })
		defer wg.Wait()
		defer stop()
	}
	v := view.New(func(ctx context.Context, index uint64) ([]*api.ServiceEntry, uint64, error) {
		q := (&api.QueryOptions{WaitIndex: index, WaitTime: 10 * time.Second}).WithContext(ctx)
		entries, meta, err := r.client.Health().Service(r.svc.Name, "", false, q)
		if err != nil {
			return nil, 0, err
		}
		return entries, meta.LastIndex, nil
	}, nil)
	v.MaxBackoff = time.Second
	var lastErr error
	v.OnError = func(err error, _ int) { lastErr = err }
	var found uint64
	err := v.Run(ctx, func(entries []*api.ServiceEntry, index uint64) error {
		if !done(entries) {
			return nil
		}
		found = index
		return view.ErrStop
	})
	if err != nil && lastErr != nil {
		err = fmt.Errorf("%w (last error: %v)", err, lastErr)
	}
	if err != nil {
		return 0, fmt.Errorf("wait for the catalog to show %s out of service: %w", r.svc.ID, err)
	}
	return found, nil
}

// nudgeEvery runs nudge every interval until ctx ends.
func (r *Registrar) nudgeEvery(ctx context.Context, interval time.Duration, nudge func(context.Context) error) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		err := nudge(ctx)
		if ctx.Err() != nil {
			return
		}
		r.log.Warn("the servers do not show the instance out of service yet; asked the agent to sync again", "err", err)
	}
}
