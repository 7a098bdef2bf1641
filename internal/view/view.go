// Package view is lbctl's one Consul blocking-query loop: the health watch,
// the split watch, the drain's wait for load balancers and its wait for the
// catalog all run their query through it. Its rules are consul-template's
// (watch/view.go):
//
//   - the same index back means nothing happened: nothing is emitted;
//   - an index that went backwards resets to 0 and the query is asked
//     again, unless Confirm is set (see below);
//   - data equal to the last emitted data is not emitted, unless IndexOnly
//     is set: then the new index is emitted with the previous data, because
//     the drain protocol needs every index a load balancer applies
//     (docs/drain.md);
//   - requests start at least MinGap apart, plus up to MinGap of jitter,
//     counted from the previous request's start: an answer is emitted as
//     soon as it arrives, and a query that blocked for longer than the gap
//     is asked again at once;
//   - a failure waits a backoff that doubles from MinBackoff to MaxBackoff,
//     with jitter; a success resets it.
//
// An index that goes backwards has two causes. A cluster rebuilt or
// restored from an older snapshot: the lower index is the new truth. Or a
// Consul server that answers from the past: one just elected leader (after
// a restart, say) serves default-mode reads while it is still applying its
// raft log, so for a moment it answers an older state, even an empty
// catalog at index 1 (Consul only holds back ?consistent reads until its log
// is applied: hashicorp/consul#2644). consul-template's rule, ask again from
// 0, takes that old state at once; a load balancer would render instances
// that are long gone, or none. With Confirm set, the view asks Confirm
// instead (a ?consistent read): its answer is the truth, whatever its index.
// An answer whose index is below what the caller already holds is never
// emitted before that.
package view

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/lbctl/lbctl/internal/backoff"
)

// Defaults that New fills in.
const (
	DefaultMinGap     = 5 * time.Millisecond
	DefaultMinBackoff = 50 * time.Millisecond
	DefaultMaxBackoff = 5 * time.Second
)

// ErrStop, returned by an emit function, ends Run with no error.
var ErrStop = errors.New("view: stop")

// Fetch runs one blocking query: it answers once Consul's index for the
// query passes index (at once for 0) or the query's wait time ends, with the
// data and the answer's index (X-Consul-Index).
type Fetch[T any] func(ctx context.Context, index uint64) (data T, answerIndex uint64, err error)

// View runs one query until its context ends. Set its fields before Run.
type View[T any] struct {
	fetch Fetch[T]
	equal func(a, b T) bool

	// IndexOnly emits a new index even when its data equals the last
	// emitted data; the last data is emitted again, so it stays cheap to
	// compare downstream.
	IndexOnly bool
	// MinGap is the least time between two requests' starts (up to twice
	// as much with jitter); 0 sends the next request at once.
	MinGap time.Duration
	// MinBackoff and MaxBackoff bound the wait after a failed request.
	MinBackoff, MaxBackoff time.Duration
	// OnError, when set, hears every failed request with the number of
	// failures in a row. A request cut short because ctx ended is not one.
	OnError func(err error, failures int)
	// From is the index of an answer the caller already holds (kept from an
	// earlier run): the first request waits from it, failed requests are
	// retried from it, and an answer below it has gone backwards. 0: none.
	From uint64
	// Confirm, when set, is asked in place of the next request after an
	// answer whose index went backwards: a read that is not answered from a
	// server's past (for Consul, a ?consistent read, which waits until the
	// leader has applied its log). Its answer is taken whatever its index;
	// until one comes (it fails, backing off, while there is no leader ready),
	// the caller keeps what it has. nil: ask again from 0 (consul-template's rule).
	Confirm func(ctx context.Context) (data T, answerIndex uint64, err error)
}

// New is a View of fetch with the default gap and backoff. equal says two
// answers' data are the same; nil treats every new index as new data.
func New[T any](fetch Fetch[T], equal func(a, b T) bool) *View[T] {
	return &View[T]{fetch: fetch, equal: equal,
		MinGap: DefaultMinGap, MinBackoff: DefaultMinBackoff, MaxBackoff: DefaultMaxBackoff}
}

// Run asks the query again and again and calls emit, in Run's goroutine,
// with each new answer. The first answer is always emitted. Run returns
// ctx's error when ctx ends, nil when emit returns ErrStop, and any other
// error emit returns.
func (v *View[T]) Run(ctx context.Context, emit func(data T, index uint64) error) error {
	var (
		index     = v.From // what the next request waits for
		last      T        // the last emitted data and its index
		lastIndex = v.From
		emitted   bool
		confirm   bool // the index went backwards: the next request is Confirm
		failures  int
		start     time.Time // when the previous request started
	)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !v.gap(ctx, start) {
			return ctx.Err()
		}
		start = time.Now()
		var (
			data T
			got  uint64
			err  error
		)
		if confirm {
			data, got, err = v.Confirm(ctx)
		} else {
			data, got, err = v.fetch(ctx, index)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			failures++
			if v.OnError != nil {
				v.OnError(err, failures)
			}
			backoff.Sleep(ctx, backoff.Delay(failures, v.MinBackoff, v.MaxBackoff, nil))
			continue
		}
		failures = 0
		switch {
		case confirm:
			confirm = false // the truth, whatever its index
			if !emitted && got == v.From {
				continue // what the caller holds: nothing new
			}
		case (emitted || v.From > 0) && got == index:
			continue // the wait time ran out: nothing happened
		case got < index && v.Confirm != nil:
			confirm = true // the index went backwards: from the past, or a reset?
			continue
		case got < index:
			index = 0 // the index went backwards: start over
			continue
		}
		index = got
		if emitted && v.equal != nil && v.equal(last, data) {
			if !v.IndexOnly || got == lastIndex {
				continue
			}
			data = last
		}
		last, lastIndex, emitted = data, got, true
		if err := emit(data, got); err != nil {
			if errors.Is(err, ErrStop) {
				return nil
			}
			return err
		}
	}
}

// gap waits until MinGap (plus jitter) has passed since start, or ctx ends;
// it reports whether ctx is still live.
func (v *View[T]) gap(ctx context.Context, start time.Time) bool {
	if start.IsZero() || v.MinGap <= 0 {
		return true
	}
	wait := time.Until(start.Add(v.MinGap + rand.N(v.MinGap)))
	return wait <= 0 || backoff.Sleep(ctx, wait)
}
