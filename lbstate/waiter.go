package lbstate

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/lbctl/lbctl/internal/view"
)

// Waiter is the draining instance's side: it waits, with blocking queries on
// Prefix, until every live load balancer routing to a Target has confirmed it.
type Waiter struct {
	client *api.Client
	log    *slog.Logger

	// Prefix is the KV prefix (Prefix by default).
	Prefix string
	// WaitTime is how long one blocking query may hang in Consul.
	WaitTime time.Duration
	// RetryMin and RetryMax bound the pause after a failed query.
	RetryMin, RetryMax time.Duration
}

// NewWaiter waits through client.
func NewWaiter(client *api.Client, log *slog.Logger) *Waiter {
	return &Waiter{
		client: client, log: log.With("component", "lbstate"),
		Prefix: Prefix, WaitTime: time.Minute, RetryMin: 50 * time.Millisecond, RetryMax: 2 * time.Second,
	}
}

// Result is how a wait ended.
type Result struct {
	// Index is the Consul index that was waited for.
	Index uint64
	// Confirmed are the load balancers that confirmed the target.
	Confirmed []string
	// Pending are those that had not when the wait ended (empty unless TimedOut).
	Pending []string
	// Ignored are live load balancers that do not route to the target's service and tags.
	Ignored []string
	// TimedOut says the bound passed before every load balancer confirmed.
	TimedOut bool
	// LastErr is the last failed Consul query, if the wait ended on one.
	LastErr error
	// Waited is how long the wait took.
	Waited time.Duration
}

// Wait returns once every live load balancer that routes to t has confirmed
// t.Index, or once timeout has passed (TimedOut set, Pending naming the
// stragglers: the caller proceeds and says so). A timeout of 0 or less waits
// as long as ctx. Only ctx ending returns an error.
func (w *Waiter) Wait(ctx context.Context, t Target, timeout time.Duration) (Result, error) {
	start := time.Now()
	wctx, cancel := ctx, context.CancelFunc(func() {})
	if timeout > 0 {
		wctx, cancel = context.WithTimeout(ctx, timeout)
	}
	defer cancel()
	res := Result{Index: t.Index}
	v := view.New(func(ctx context.Context, index uint64) (api.KVPairs, uint64, error) {
		q := (&api.QueryOptions{WaitIndex: index, WaitTime: w.WaitTime}).WithContext(ctx)
		pairs, meta, err := w.client.KV().List(w.Prefix, q)
		if err != nil {
			return nil, 0, fmt.Errorf("list load balancers under %s: %w", w.Prefix, err)
		}
		res.LastErr = nil // the wait no longer ends on a failure
		return pairs, meta.LastIndex, nil
	}, nil)
	v.MinBackoff, v.MaxBackoff = w.RetryMin, w.RetryMax
	v.OnError = func(err error, _ int) {
		res.LastErr = err
		w.log.Debug("listing load balancers failed; retrying", "err", err)
	}
	err := v.Run(wctx, func(pairs api.KVPairs, _ uint64) error {
		res = w.evaluate(pairs, t)
		res.Index = t.Index
		if len(res.Pending) == 0 {
			return view.ErrStop
		}
		w.log.Debug("waiting for load balancers", "pending", res.Pending, "index", t.Index)
		return nil
	})
	// Run ends with an error only when wctx does: ctx, or the timeout.
	if err != nil && ctx.Err() != nil {
		return res, fmt.Errorf("wait for load balancers: %w", ctx.Err())
	}
	res.TimedOut, res.Waited = err != nil, time.Since(start)
	return res, nil
}

// evaluate sorts the live load balancers into confirmed, pending and ignored.
// A key without a session is not live; an unreadable one counts as pending.
func (w *Waiter) evaluate(pairs api.KVPairs, t Target) Result {
	var res Result
	for _, p := range pairs {
		if p.Session == "" {
			continue
		}
		st, err := decodeState(p.Key, p.Value)
		if err != nil {
			w.log.Warn("unreadable load balancer state; counting it as not confirmed", "err", err)
			res.Pending = append(res.Pending, p.Key)
			continue
		}
		switch relevant, confirmed := t.verdict(st); {
		case !relevant:
			res.Ignored = append(res.Ignored, st.ID)
		case confirmed:
			res.Confirmed = append(res.Confirmed, st.ID)
		default:
			res.Pending = append(res.Pending, st.ID)
		}
	}
	slices.Sort(res.Confirmed)
	slices.Sort(res.Pending)
	slices.Sort(res.Ignored)
	return res
}
