package shift

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// memStore is a Store in memory with Consul's CAS rules.
type memStore struct {
	mu      sync.Mutex
	split   Split
	index   uint64
	history []Split
}

func (m *memStore) Load(ctx context.Context, service string) (Split, uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.split, m.index, nil
}

func (m *memStore) Save(ctx context.Context, s Split, index uint64) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := s.Validate(); err != nil {
		return 0, err
	}
	if index != m.index {
		return 0, ErrConflict
	}
	m.index++
	m.split = s
	m.history = append(m.history, s)
	return m.index, nil
}

// abortNow writes an aborted split over whatever is there, as --abort does.
func (m *memStore) abortNow() {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.split.At(0)
	s.State, s.Reason = Aborted, "aborted by test"
	m.index++
	m.split = s
	m.history = append(m.history, s)
}

func (m *memStore) trail() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var parts []string
	for _, s := range m.history {
		parts = append(parts, fmt.Sprintf("%d:%s", s.ToPercent(), s.State))
	}
	return strings.Join(parts, " ")
}

// scriptGate answers from a function of (step percent, final).
type scriptGate struct {
	split  func() Split
	answer func(pct int, final bool) (bool, error)
	begun  int
}

func (g *scriptGate) Name() string                    { return "script" }
func (g *scriptGate) Begin(ctx context.Context) error { g.begun++; return nil }
func (g *scriptGate) Check(ctx context.Context, final bool) (Verdict, error) {
	ok, err := g.answer(g.split().ToPercent(), final)
	return Verdict{Gate: "script", Pass: ok, Detail: fmt.Sprintf("pass=%v", ok)}, err
}

func newTestRunner(steps []int, answer func(pct int, final bool) (bool, error)) (*Runner, *memStore, *scriptGate) {
	store := &memStore{}
	r := &Runner{
		Plan:  Plan{Service: "greeter", From: "blue", To: "green", Steps: steps, Interval: time.Second, Poll: 300 * time.Millisecond},
		Store: store,
	}
	gate := &scriptGate{split: func() Split { return r.split }, answer: answer}
	r.Gates = []Gate{gate}
	return r, store, gate
}

func TestRunnerWalksEveryStepThenDone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, store, gate := newTestRunner([]int{10, 50, 100}, func(int, bool) (bool, error) { return true, nil })
		start := time.Now()
		final, err := r.Run(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if held := time.Since(start); held != 3*r.Plan.Interval {
			t.Fatalf("held %s in all, want one %s interval per step", held, r.Plan.Interval)
		}
		if got, want := store.trail(), "10:running 50:running 100:running 100:done"; got != want {
			t.Fatalf("writes: %s, want %s", got, want)
		}
		if final.State != Done || final.Step != 3 || gate.begun != 3 {
			t.Fatalf("final %s, gate begun %d times", final, gate.begun)
		}
	})
}

func TestRunnerRollsBackWhenAGateFailsDuringTheHold(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, store, _ := newTestRunner([]int{10, 50, 100}, func(pct int, final bool) (bool, error) { return pct < 50, nil })
		_, err := r.Run(context.Background())
		if !errors.Is(err, ErrRolledBack) || !strings.Contains(err.Error(), "at 50% green") {
			t.Fatalf("err = %v, want a rollback at 50%%", err)
		}
		if got, want := store.trail(), "10:running 50:running 0:rolled_back"; got != want {
			t.Fatalf("writes: %s, want %s", got, want)
		}
		if store.split.Weights["blue"] != 100 || !strings.Contains(store.split.Reason, "gate script failed") {
			t.Fatalf("stored %+v, want all on blue with the reason", store.split)
		}
	})
}

func TestRunnerRollsBackWhenTheFinalCheckFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, store, _ := newTestRunner([]int{10, 100}, func(pct int, final bool) (bool, error) { return !(final && pct == 100), nil })
		if _, err := r.Run(context.Background()); !errors.Is(err, ErrRolledBack) {
			t.Fatalf("err = %v", err)
		}
		if got, want := store.trail(), "10:running 100:running 0:rolled_back"; got != want {
			t.Fatalf("writes: %s, want %s", got, want)
		}
	})
}

func TestRunnerToleratesAGateErrorUntilTheEndOfTheHold(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		broken := errors.New("consul down")
		r, store, _ := newTestRunner([]int{10}, func(pct int, final bool) (bool, error) { return true, broken })
		_, err := r.Run(context.Background())
		if !errors.Is(err, ErrRolledBack) || !strings.Contains(err.Error(), "could not check: consul down") {
			t.Fatalf("err = %v", err)
		}
		if got, want := store.trail(), "10:running 0:rolled_back"; got != want {
			t.Fatalf("writes: %s, want %s", got, want)
		}
	})
}

func TestRunnerInterruptedLeavesTheLastWrittenSplit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		r, store, _ := newTestRunner([]int{10, 50, 100}, func(pct int, final bool) (bool, error) {
			if pct == 50 {
				cancel() // Ctrl-C during the 50% hold
			}
			return true, nil
		})
		_, err := r.Run(ctx)
		if !errors.Is(err, ErrInterrupted) {
			t.Fatalf("err = %v", err)
		}
		if got, want := store.trail(), "10:running 50:running 50:interrupted"; got != want {
			t.Fatalf("writes: %s, want %s", got, want)
		}
	})
}

func TestRunnerInterruptedBeforeTheFirstStepWritesNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		r, store, _ := newTestRunner([]int{10}, func(int, bool) (bool, error) { return true, nil })
		if _, err := r.Run(ctx); !errors.Is(err, ErrInterrupted) {
			t.Fatalf("err = %v", err)
		}
		if store.trail() != "" {
			t.Fatalf("wrote %s", store.trail())
		}
	})
}

func TestRunnerStopsWhenAborted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var store *memStore
		r, store, _ := newTestRunner([]int{10, 50}, func(pct int, final bool) (bool, error) {
			store.abortNow()
			return true, nil
		})
		_, err := r.Run(context.Background())
		if !errors.Is(err, ErrAborted) {
			t.Fatalf("err = %v", err)
		}
		if got, want := store.trail(), "10:running 0:aborted"; got != want {
			t.Fatalf("writes: %s, want %s (the runner must not overwrite the abort)", got, want)
		}
	})
}

func TestCheckSteps(t *testing.T) {
	for _, bad := range [][]int{nil, {0, 50}, {10, 10}, {50, 10}, {10, 101}} {
		if CheckSteps(bad) == nil {
			t.Errorf("%v accepted", bad)
		}
	}
	for _, good := range [][]int{{100}, {1, 2, 3}, {10, 50, 100}, {5, 25}} {
		if err := CheckSteps(good); err != nil {
			t.Errorf("%v: %v", good, err)
		}
	}
}

// A runner started over a split already in KV goes on from it.
func TestRunnerGoesOnFromTheStoredSplit(t *testing.T) {
	for _, c := range []struct {
		name   string
		steps  []int
		stored Split
		want   string
	}{
		{"ResumesAnInterruptedShiftWithoutMovingBack", []int{10, 50, 100},
			Split{Service: "greeter", From: "blue", To: "green", Step: 2, State: Interrupted}.At(30),
			"50:running 100:running 100:done"},
		{"StartsOverAfterARollback", []int{10, 100},
			Split{Service: "greeter", From: "blue", To: "green", Step: 2, State: RolledBack}.At(0),
			"10:running 100:running 100:done"},
		{"NeverMovesBackAfterDone", []int{10, 50, 100},
			Split{Service: "greeter", From: "blue", To: "green", Step: 3, State: Done}.At(100),
			"100:running 100:done"},
	} {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r, store, _ := newTestRunner(c.steps, func(int, bool) (bool, error) { return true, nil })
				store.Save(context.Background(), c.stored, 0)
				store.history = nil
				if _, err := r.Run(context.Background()); err != nil {
					t.Fatal(err)
				}
				if got := store.trail(); got != c.want {
					t.Fatalf("writes: %s, want %s", got, c.want)
				}
			})
		})
	}
}

// cancelOnBegin is Ctrl-C arriving while a gate takes its baseline.
type cancelOnBegin struct{ cancel context.CancelFunc }

func (g cancelOnBegin) Name() string { return "cancel" }
func (g cancelOnBegin) Begin(ctx context.Context) error {
	g.cancel()
	return ctx.Err()
}
func (g cancelOnBegin) Check(ctx context.Context, final bool) (Verdict, error) {
	return Verdict{Gate: "cancel", Pass: true}, nil
}

func TestRunnerCtrlCWhileAGateBeginsIsAnInterruptionNotARollback(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		r, store, _ := newTestRunner([]int{10, 100}, func(int, bool) (bool, error) { return true, nil })
		r.Gates = []Gate{cancelOnBegin{cancel}}
		if _, err := r.Run(ctx); !errors.Is(err, ErrInterrupted) {
			t.Fatalf("err = %v", err)
		}
		if got, want := store.trail(), "10:running 10:interrupted"; got != want {
			t.Fatalf("writes: %s, want %s", got, want)
		}
	})
}

// lostAnswerStore applies the first step's write, then Ctrl-C arrives before
// its answer is back: a Save that honoured the cancelled context would
// report a failure for a write Consul made.
type lostAnswerStore struct {
	*memStore
	ctrlC func()
}

func (l *lostAnswerStore) Save(ctx context.Context, s Split, index uint64) (uint64, error) {
	i, err := l.memStore.Save(ctx, s, index)
	if err == nil && s.State == Running && s.Step == 1 {
		l.ctrlC()
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
	}
	return i, err
}

func TestCtrlCDuringAStepWriteStillRecordsTheInterruptedStep(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		r, store, _ := newTestRunner([]int{10, 100}, func(int, bool) (bool, error) { return true, nil })
		r.Store = &lostAnswerStore{memStore: store, ctrlC: cancel}
		split, err := r.Run(ctx)
		if !errors.Is(err, ErrInterrupted) || split.Step != 1 {
			t.Fatalf("got step %d, %v; want interrupted at step 1", split.Step, err)
		}
		if got, want := store.trail(), "10:running 10:interrupted"; got != want {
			t.Fatalf("writes: %s, want %s", got, want)
		}
	})
}
