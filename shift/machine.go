package shift

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Errors a shift ends with; callers branch on them for exit codes.
var (
	// ErrRolledBack: a gate failed and traffic went back to From.
	ErrRolledBack = errors.New("rolled back")
	// ErrAborted: someone aborted the shift; traffic went back to From.
	ErrAborted = errors.New("aborted")
	// ErrInterrupted: the shift stopped between steps; the split stays at the last step written.
	ErrInterrupted = errors.New("interrupted")
)

// Store keeps splits (KV in production, a map in unit tests).
type Store interface {
	Load(ctx context.Context, service string) (Split, uint64, error)
	Save(ctx context.Context, s Split, index uint64) (uint64, error)
}

// Verdict is one gate's answer.
type Verdict struct {
	Gate string
	// Pass is false when the gate failed: the shift rolls back.
	Pass bool
	// Detail is for a human: "2/2 passing", "0.4% errors (3 of 812 calls)".
	Detail string
}

// Gate decides whether the new version may take more traffic.
type Gate interface {
	Name() string
	// Begin is called once a step's split is written; Check measures from there.
	Begin(ctx context.Context) error
	// Check is called during the hold (final false: fail only on clear
	// evidence) and at its end (final true: the step passes or fails).
	Check(ctx context.Context, final bool) (Verdict, error)
}

// Plan is one shift to run.
type Plan struct {
	Service, From, To string
	// Steps are increasing percentages for To, such as 10, 50, 100.
	Steps []int
	// Interval is how long each step holds before its gates decide.
	Interval time.Duration
	// Poll is how often gates and the split's key are checked during a hold
	// (default: a tenth of Interval, within 100ms-1s).
	Poll time.Duration
	// Holder names who runs the shift ("alice@host pid 42"), recorded in KV.
	Holder string
}

// EventKind says what happened.
type EventKind string

const (
	StepStarted EventKind = "step"
	Checked     EventKind = "checked"
	StepPassed  EventKind = "passed"
	Finished    EventKind = "done"
	RollingBack EventKind = "rollback"
	Stopped     EventKind = "stopped"
)

// Event is progress, for the display.
type Event struct {
	Kind     EventKind
	Split    Split
	Verdicts []Verdict
	// Elapsed and Interval: how far into the current step's hold.
	Elapsed, Interval time.Duration
	Err               error
}

// Runner runs a Plan: step, hold and gate, next step or rollback. It holds
// no lock itself: the caller holds the service's lock while Run runs.
type Runner struct {
	Plan    Plan
	Store   Store
	Gates   []Gate
	OnEvent func(Event)

	split Split
	index uint64
}

// Run moves the split step by step. It returns the last split written and
// nil when every step passed; ErrRolledBack, ErrAborted or ErrInterrupted
// (wrapped, with the reason) otherwise.
func (r *Runner) Run(ctx context.Context) (Split, error) {
	if err := CheckSteps(r.Plan.Steps); err != nil {
		return Split{}, err
	}
	if r.Plan.Poll <= 0 {
		r.Plan.Poll = min(max(r.Plan.Interval/10, 100*time.Millisecond), time.Second)
	}
	resumeAt, err := r.start(ctx)
	if err != nil {
		return r.split, err
	}
	for i, pct := range r.Plan.Steps {
		if pct < resumeAt {
			continue
		}
		if err := r.step(ctx, i, pct); err != nil {
			return r.split, err
		}
	}
	if ctx.Err() != nil {
		return r.split, r.interrupt()
	}
	if err := r.write(ctx, r.split, Done, ""); err != nil {
		return r.split, r.afterWriteError(ctx, err)
	}
	r.emit(Event{Kind: Finished, Split: r.split})
	return r.split, nil
}

// start reads the current split's index so the first write is a CAS on it.
// When the current split is a shift between the same tags that was
// interrupted, left running by a process that is gone, or done at a lower
// step, the shift resumes: steps below its percentage are skipped, so
// traffic never moves back; the step at or just above it holds again
// before going further.
func (r *Runner) start(ctx context.Context) (resumeAt int, err error) {
	current, index, err := r.Store.Load(ctx, r.Plan.Service)
	if err != nil && index == 0 {
		return 0, err
	}
	r.index = index // an invalid split at index is simply replaced
	r.split = Split{Service: r.Plan.Service, From: r.Plan.From, To: r.Plan.To, Steps: r.Plan.Steps, Holder: r.Plan.Holder}.At(0)
	resumable := current.State == Interrupted || current.State == Running || current.State == Done
	if err == nil && resumable && current.From == r.Plan.From && current.To == r.Plan.To {
		r.split = r.split.At(current.ToPercent())
		r.split.Step = current.Step
		return current.ToPercent(), nil
	}
	return 0, nil
}

// step writes one step's split, holds it for the interval while watching the
// gates, and decides.
func (r *Runner) step(ctx context.Context, i, pct int) error {
	if ctx.Err() != nil {
		return r.interrupt()
	}
	next := r.split.At(pct)
	next.Step = i + 1
	if err := r.write(ctx, next, Running, ""); err != nil {
		return r.afterWriteError(ctx, err)
	}
	r.emit(Event{Kind: StepStarted, Split: r.split, Interval: r.Plan.Interval})
	for _, g := range r.Gates {
		if err := g.Begin(ctx); err != nil {
			if ctx.Err() != nil {
				return r.interrupt()
			}
			return r.rollback(fmt.Sprintf("gate %s could not start: %v", g.Name(), err))
		}
	}
	if err := r.hold(ctx); err != nil {
		return err
	}
	verdicts, failed := r.check(ctx, true)
	if failed != "" {
		return r.rollback(failed)
	}
	if ctx.Err() != nil {
		return r.interrupt() // the final check did not finish
	}
	r.emit(Event{Kind: StepPassed, Split: r.split, Verdicts: verdicts, Elapsed: r.Plan.Interval, Interval: r.Plan.Interval})
	return nil
}

// hold waits out the interval, checking gates and the split's key every
// poll. One timer at a time, so tests drive it deterministically with
// testing/synctest's clock.
func (r *Runner) hold(ctx context.Context) error {
	start := time.Now()
	for {
		elapsed := time.Now().Sub(start)
		if elapsed >= r.Plan.Interval {
			return nil
		}
		if ctx.Err() != nil {
			return r.interrupt()
		}
		select {
		case <-ctx.Done():
			return r.interrupt()
		case <-time.After(min(r.Plan.Poll, r.Plan.Interval-elapsed)):
		}
		if time.Now().Sub(start) >= r.Plan.Interval {
			return nil // the final check follows
		}
		if err := r.checkKey(ctx); err != nil {
			return err
		}
		verdicts, failed := r.check(ctx, false)
		if failed != "" {
			return r.rollback(failed)
		}
		r.emit(Event{Kind: Checked, Split: r.split, Verdicts: verdicts, Elapsed: time.Now().Sub(start), Interval: r.Plan.Interval})
	}
}

// check asks every gate; failed is the reason of the first failure, or "".
// A gate that cannot answer fails only at the end of a hold.
func (r *Runner) check(ctx context.Context, final bool) (verdicts []Verdict, failed string) {
	for _, g := range r.Gates {
		v, err := g.Check(ctx, final)
		if err != nil {
			if ctx.Err() != nil {
				return verdicts, ""
			}
			v = Verdict{Gate: g.Name(), Pass: !final, Detail: "could not check: " + err.Error()}
		}
		verdicts = append(verdicts, v)
		if !v.Pass && failed == "" {
			failed = fmt.Sprintf("gate %s failed at %d%% %s: %s", v.Gate, r.split.ToPercent(), r.Plan.To, v.Detail)
		}
	}
	return verdicts, failed
}

// checkKey stops the shift when someone else changed the split (an abort).
func (r *Runner) checkKey(ctx context.Context) error {
	current, index, err := r.Store.Load(ctx, r.Plan.Service)
	if err != nil || index == r.index {
		return nil // an unreadable key is retried next poll; gates still run
	}
	return r.changedUnderUs(current)
}

func (r *Runner) changedUnderUs(current Split) error {
	r.split = current
	r.emit(Event{Kind: Stopped, Split: current})
	if current.State == Aborted {
		return fmt.Errorf("%w: %s", ErrAborted, current.Reason)
	}
	return fmt.Errorf("%w: now %s", ErrConflict, current)
}

// afterWriteError explains a failed write: an abort, a stop, or Consul.
func (r *Runner) afterWriteError(ctx context.Context, err error) error {
	if errors.Is(err, ErrConflict) {
		if current, _, lerr := r.Store.Load(context.WithoutCancel(ctx), r.Plan.Service); lerr == nil {
			return r.changedUnderUs(current)
		}
	}
	if ctx.Err() != nil {
		return r.interrupt()
	}
	return err
}

// rollback puts all traffic back on From at once and records why.
func (r *Runner) rollback(reason string) error {
	back := r.split.At(0)
	r.emit(Event{Kind: RollingBack, Split: back, Err: errors.New(reason)})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.write(ctx, back, RolledBack, reason); err != nil {
		if errors.Is(err, ErrConflict) {
			return r.afterWriteError(ctx, err)
		}
		return fmt.Errorf("%w FAILED (%s): write the split: %v", ErrRolledBack, reason, err)
	}
	return fmt.Errorf("%w: %s", ErrRolledBack, reason)
}

// interrupt records that the shift stopped, leaving the last written split.
func (r *Runner) interrupt() error {
	if r.split.Step == 0 {
		return fmt.Errorf("%w before the first step: the split was not touched", ErrInterrupted)
	}
	reason := fmt.Sprintf("interrupted at step %d/%d; split left at %s %d%% / %s %d%%",
		r.split.Step, len(r.Plan.Steps), r.Plan.From, r.split.FromPercent(), r.Plan.To, r.split.ToPercent())
	err := r.write(context.Background(), r.split, Interrupted, reason)
	r.emit(Event{Kind: Stopped, Split: r.split, Err: err})
	if err != nil {
		return fmt.Errorf("%w (%s), and recording that failed: %v", ErrInterrupted, reason, err)
	}
	return fmt.Errorf("%w: %s", ErrInterrupted, reason)
}

// writeTimeout bounds one write of the split.
const writeTimeout = 10 * time.Second

// write saves s with state and reason as a CAS on the last index written.
// Ctrl-C (ctx ending) does not cut a write short: Consul may have applied
// it with its answer still on the way, and the runner would then not know
// which split is live (it would report "not touched" over a live 10%).
func (r *Runner) write(ctx context.Context, s Split, state State, reason string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
	defer cancel()
	s.State, s.Reason, s.UpdatedAt = state, reason, time.Now().UTC()
	index, err := r.Store.Save(ctx, s, r.index)
	if err != nil {
		return err
	}
	r.split, r.index = s, index
	return nil
}

func (r *Runner) emit(e Event) {
	if r.OnEvent != nil {
		r.OnEvent(e)
	}
}
