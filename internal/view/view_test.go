package view

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"testing/synctest"
	"time"
)

// answer is one scripted reply of the fake fetch; block is how long the
// query hangs before it replies.
type answer struct {
	data  []int
	index uint64
	err   error
	block time.Duration
}

// request is what the fake fetch was asked, and when.
type request struct {
	index uint64
	at    time.Time
}

// emitted is one call of emit.
type emitted struct {
	data  []int
	index uint64
	at    time.Time
}

// script runs v over the answers in a synctest bubble and returns what was
// asked and what was emitted. After the last answer the fetch ends Run by
// cancelling its context; Run must then return context.Canceled.
func script(t *testing.T, answers []answer, setup func(*View[[]int])) (reqs []request, emits []emitted) {
	t.Helper()
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		fetch := func(ctx context.Context, index uint64) ([]int, uint64, error) {
			reqs = append(reqs, request{index, time.Now()})
			if len(reqs) > len(answers) {
				cancel()
				return nil, 0, ctx.Err()
			}
			a := answers[len(reqs)-1]
			time.Sleep(a.block)
			return a.data, a.index, a.err
		}
		v := New(fetch, slices.Equal[[]int])
		if setup != nil {
			setup(v)
		}
		err := v.Run(ctx, func(data []int, index uint64) error {
			emits = append(emits, emitted{data, index, time.Now()})
			return nil
		})
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Run = %v, want context.Canceled", err)
		}
	})
	return reqs, emits
}

func indexes(reqs []request) []uint64 {
	var out []uint64
	for _, r := range reqs {
		out = append(out, r.index)
	}
	return out
}

func emitsString(emits []emitted) string {
	s := ""
	for _, e := range emits {
		s += fmt.Sprintf("%v@%d ", e.data, e.index)
	}
	return s
}

// The index rules, with and without IndexOnly.
var rules = []answer{
	{data: []int{1}, index: 10},    // first answer: emitted
	{data: []int{1}, index: 10},    // same index back: the wait ran out
	{data: []int{2}, index: 10},    // same index back: nothing happened, whatever the data
	{data: []int{1}, index: 12},    // same data at a newer index
	{data: []int{2}, index: 15},    // new data
	{data: []int{2}, index: 7},     // backwards: start over from 0, nothing emitted
	{data: []int{2}, index: 7},     // asked at 0: same data, an older index than the last emitted
	{data: []int{3}, index: 7},     // same index back again
	{data: []int{3, 4}, index: 20}, // new data
}

func TestIndexRules(t *testing.T) {
	reqs, emits := script(t, rules, nil)
	if want := []uint64{0, 10, 10, 10, 12, 15, 0, 7, 7, 20}; !slices.Equal(indexes(reqs), want) {
		t.Errorf("asked at %v, want %v", indexes(reqs), want)
	}
	if got, want := emitsString(emits), "[1]@10 [2]@15 [3 4]@20 "; got != want {
		t.Errorf("emitted %q, want %q", got, want)
	}
}

func TestIndexOnlyEmitsANewIndexWithTheLastData(t *testing.T) {
	_, emits := script(t, rules, func(v *View[[]int]) { v.IndexOnly = true })
	if got, want := emitsString(emits), "[1]@10 [1]@12 [2]@15 [2]@7 [3 4]@20 "; got != want {
		t.Fatalf("emitted %q, want %q", got, want)
	}
	// Index-only emits hand on the slice emitted before, not the new copy.
	if &emits[1].data[0] != &emits[0].data[0] || &emits[3].data[0] != &emits[2].data[0] {
		t.Fatal("an index-only emit carried new data instead of the last emitted")
	}
}

func TestNilEqualEmitsEveryNewIndex(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		answers, n := []uint64{3, 3, 4, 5}, 0
		v := New(func(ctx context.Context, index uint64) (string, uint64, error) {
			n++
			return "same", answers[n-1], nil
		}, nil)
		var got []uint64
		err := v.Run(t.Context(), func(_ string, index uint64) error {
			got = append(got, index)
			if index == 5 {
				return ErrStop
			}
			return nil
		})
		if err != nil || !slices.Equal(got, []uint64{3, 4, 5}) {
			t.Fatalf("Run = %v, emitted %v; want nil after 3 4 5", err, got)
		}
	})
}

func TestRequestsKeepAGapFromThePreviousStart(t *testing.T) {
	const gap = 8 * time.Millisecond
	answers := []answer{
		{data: []int{1}, index: 1},
		{data: []int{2}, index: 2, block: 3 * time.Millisecond},
		{data: []int{3}, index: 3, block: 3 * time.Second}, // a blocking query that hung
		{data: []int{4}, index: 4},
		{data: []int{5}, index: 5},
	}
	reqs, emits := script(t, answers, func(v *View[[]int]) { v.MinGap = gap })
	for i := 1; i < len(reqs); i++ {
		since := reqs[i].at.Sub(reqs[i-1].at)
		if i == 3 {
			// Asked again as soon as the hung query answered.
			if !reqs[i].at.Equal(emits[2].at) {
				t.Errorf("request %d started %s after the hung query answered, want at once", i, reqs[i].at.Sub(emits[2].at))
			}
			continue
		}
		if since < gap || since >= 2*gap {
			t.Errorf("request %d started %s after the one before, want in [%s, %s)", i, since, gap, 2*gap)
		}
	}
	// Every answer is emitted the moment it arrives: the gap delays only
	// the next request.
	for i, e := range emits {
		if want := reqs[i].at.Add(answers[i].block); !e.at.Equal(want) {
			t.Errorf("emit %d at +%s after its answer", i, e.at.Sub(want))
		}
	}
}

func TestFailuresBackOffToTheCapAndResetOnSuccess(t *testing.T) {
	fail := answer{err: errors.New("connection refused")}
	answers := []answer{fail, fail, fail, fail, fail, {data: []int{1}, index: 1}, fail, {data: []int{1}, index: 1}}
	var failures []int
	reqs, emits := script(t, answers, func(v *View[[]int]) {
		v.MinBackoff, v.MaxBackoff = 100*time.Millisecond, 400*time.Millisecond
		v.OnError = func(err error, n int) { failures = append(failures, n) }
	})
	if want := []int{1, 2, 3, 4, 5, 1}; !slices.Equal(failures, want) {
		t.Errorf("OnError heard failures %v, want %v", failures, want)
	}
	// The nominal delay after each request; equal jitter keeps [d/2, d].
	nominal := []time.Duration{100, 200, 400, 400, 400, 0, 100, 0}
	for i := 1; i < len(reqs); i++ {
		d := nominal[i-1] * time.Millisecond
		if since := reqs[i].at.Sub(reqs[i-1].at); since < d/2 || since > max(d, 2*DefaultMinGap) {
			t.Errorf("request %d came %s after the one before, want %s with jitter", i, since, d)
		}
	}
	if len(emits) != 1 {
		t.Errorf("emitted %d times, want once (the second success is the same index)", len(emits))
	}
}

func TestContextEndsRunAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		for _, name := range []string{"blocked in a query", "backing off"} {
			ctx, cancel := context.WithCancel(t.Context())
			heard := 0
			v := New(func(ctx context.Context, index uint64) (int, uint64, error) {
				if name == "backing off" {
					return 0, 0, errors.New("down")
				}
				<-ctx.Done()
				return 0, 0, ctx.Err()
			}, nil)
			v.MinBackoff, v.MaxBackoff = time.Hour, time.Hour
			v.OnError = func(error, int) { heard++ }
			done := make(chan error)
			go func() { done <- v.Run(ctx, func(int, uint64) error { return nil }) }()
			synctest.Wait()
			began := time.Now()
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Errorf("%s: Run = %v, want context.Canceled", name, err)
			}
			if waited := time.Since(began); waited != 0 {
				t.Errorf("%s: Run took %s to stop", name, waited)
			}
			if want := map[string]int{"blocked in a query": 0, "backing off": 1}[name]; heard != want {
				t.Errorf("%s: OnError heard %d failures, want %d (a cancelled request is none)", name, heard, want)
			}
		}
	})
}

func TestEmitErrorsEndRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		boom := errors.New("boom")
		v := New(func(ctx context.Context, index uint64) (int, uint64, error) { return 1, index + 1, nil }, nil)
		if err := v.Run(t.Context(), func(int, uint64) error { return boom }); !errors.Is(err, boom) {
			t.Fatalf("Run = %v, want emit's error", err)
		}
		if err := v.Run(t.Context(), func(int, uint64) error { return ErrStop }); err != nil {
			t.Fatalf("Run = %v, want nil after ErrStop", err)
		}
	})
}

// confirmAsked stands for a Confirm call among the requests of scriptConfirm.
const confirmAsked = ^uint64(0)

// scriptConfirm is script with Confirm set and v.From = from: fetch and
// Confirm take the answers in turn; a Confirm call is asked at confirmAsked.
func scriptConfirm(t *testing.T, from uint64, answers []answer) (asked []uint64, emits string) {
	t.Helper()
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		next := func(index uint64) ([]int, uint64, error) {
			asked = append(asked, index)
			if len(asked) > len(answers) {
				cancel()
				return nil, 0, ctx.Err()
			}
			a := answers[len(asked)-1]
			return a.data, a.index, a.err
		}
		v := New(func(ctx context.Context, index uint64) ([]int, uint64, error) { return next(index) }, slices.Equal[[]int])
		v.From = from
		v.Confirm = func(ctx context.Context) ([]int, uint64, error) { return next(confirmAsked) }
		err := v.Run(ctx, func(data []int, index uint64) error {
			emits += fmt.Sprintf("%v@%d ", data, index)
			return nil
		})
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Run = %v, want context.Canceled", err)
		}
	})
	return asked, emits
}

// An index that went backwards is confirmed before anything is emitted: a
// server answering from its past (the confirmation shows the index held)
// changes nothing; a reset (the confirmation shows the lower index) is taken.
func TestConfirmAnIndexThatWentBackwards(t *testing.T) {
	notReady := errors.New("Not ready to serve consistent reads")
	asked, emits := scriptConfirm(t, 0, []answer{
		{data: []int{1}, index: 10},
		{data: nil, index: 1},       // from the past: not emitted, confirmed
		{err: notReady},             // the leader has not applied its log yet
		{data: []int{1}, index: 10}, // it has: what was held, nothing new
		{data: []int{2}, index: 4},  // backwards again
		{data: []int{2}, index: 4},  // and confirmed: a reset, taken
		{data: []int{3}, index: 5},
	})
	c := confirmAsked
	if want := []uint64{0, 10, c, c, 10, c, 4, 5}; !slices.Equal(asked, want) {
		t.Errorf("asked %v, want %v (%d: Confirm)", asked, want, c)
	}
	if want := "[1]@10 [2]@4 [3]@5 "; emits != want {
		t.Errorf("emitted %q, want %q", emits, want)
	}
}

// From is an answer the caller holds: the first request waits from it, a
// failed one is asked again from it, and an answer below it is confirmed.
func TestFromIsWaitedFromAcrossFailures(t *testing.T) {
	asked, emits := scriptConfirm(t, 10, []answer{
		{err: errors.New("connection refused")},
		{data: nil, index: 1},
		{data: []int{1}, index: 10}, // the confirmation: what the caller holds
		{data: []int{2}, index: 12},
	})
	c := confirmAsked
	if want := []uint64{10, 10, c, 10, 12}; !slices.Equal(asked, want) {
		t.Errorf("asked %v, want %v (%d: Confirm)", asked, want, c)
	}
	if want := "[2]@12 "; emits != want {
		t.Errorf("emitted %q, want %q", emits, want)
	}
}
