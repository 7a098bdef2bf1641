package shift

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/consul/api"
)

// Options tune Shift.
type Options struct {
	// MaxErrorRate is the highest share of failed calls to To a step may see
	// (0.01 = 1%).
	MaxErrorRate float64
	// MinCalls is how many calls to To the error-rate gate needs before it
	// fails a step early; at a step's end it decides on whatever it saw.
	MinCalls int64
	// ExtraGates run before the built-in ones (health, error rate).
	ExtraGates []Gate
	// OnEvent receives progress.
	OnEvent func(Event)
}

// Shift checks plan, takes the service's lock, runs the steps with the
// health and error-rate gates, and releases the lock. A lost lock stops the
// shift like Ctrl-C does: the last written split stays, recorded as
// interrupted.
func Shift(ctx context.Context, client *api.Client, plan Plan, opts Options) (Split, error) {
	if err := CheckPlan(ctx, client, plan); err != nil {
		return Split{}, err
	}
	holder := Me(plan, time.Now())
	if plan.Holder == "" {
		plan.Holder = fmt.Sprintf("%s@%s pid %d", holder.User, holder.Host, holder.PID)
	}
	lock, err := Acquire(ctx, client, plan.Service, holder)
	if err != nil {
		return Split{}, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-lock.Lost():
			cancel()
		case <-ctx.Done():
		}
	}()
	r := &Runner{
		Plan: plan, Store: NewKV(client), OnEvent: opts.OnEvent,
		Gates: append(slices.Clone(opts.ExtraGates),
			&HealthGate{Client: client, Service: plan.Service, Tag: plan.To},
			&ErrorRateGate{Client: client, Service: plan.Service, Tag: plan.To, Max: opts.MaxErrorRate, MinCalls: opts.MinCalls}),
	}
	split, runErr := r.Run(ctx)
	return split, errors.Join(runErr, lock.Release())
}

// Abort puts all of service's traffic back on From at once and records who
// aborted. A running shift sees the change at its next check and stops
// without writing again. Only a running or interrupted shift can be aborted.
func Abort(ctx context.Context, client *api.Client, service, by string) (Split, error) {
	kv := NewKV(client)
	current, index, err := kv.Load(ctx, service)
	if err != nil {
		return Split{}, err
	}
	if index == 0 {
		return Split{}, fmt.Errorf("%w %q: no shift recorded at %s", ErrNothingToAbort, service, SplitKey(service))
	}
	if current.State != Running && current.State != Interrupted {
		return current, fmt.Errorf("%w: the shift of %s is %s (%s); to go back, shift from %s to %s",
			ErrNothingToAbort, service, current.State, current, current.To, current.From)
	}
	back := current.At(0)
	back.State, back.Reason, back.UpdatedAt = Aborted, "aborted by "+by, time.Now().UTC()
	if _, err := kv.Save(ctx, back, index); err != nil {
		return current, err
	}
	return back, nil
}

// ErrNothingToAbort: no running or interrupted shift.
var ErrNothingToAbort = errors.New("nothing to abort")
