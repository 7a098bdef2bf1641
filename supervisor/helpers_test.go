package supervisor

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lbctl/lbctl/config"
	"github.com/lbctl/lbctl/internal/testrig"
)

// prog is a program that starts at once (startsecs 0) and retries fast;
// the rest are config's defaults.
func prog(name, script string) Program {
	zero, retries, stopWait := 0.0, 3, 5.0
	p, err := FromConfig(config.Program{
		Name:         name,
		Command:      []string{"sh", "-c", script},
		StartSecs:    &zero,
		StartRetries: &retries,
		Backoff:      config.Backoff{Min: 5 * time.Millisecond, Max: 20 * time.Millisecond},
		StopWaitSecs: &stopWait,
	})
	if err != nil {
		panic(err)
	}
	return p
}

// recorder keeps every transition, in the order they were published.
type recorder struct {
	mu sync.Mutex
	ts []Transition
}

func (r *recorder) add(t Transition) {
	r.mu.Lock()
	r.ts = append(r.ts, t)
	r.mu.Unlock()
}

func (r *recorder) all() []Transition {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.ts)
}

// states is the sequence of states name went through.
func (r *recorder) states(name string) []State {
	var out []State
	for _, t := range r.all() {
		if t.Program == name {
			out = append(out, t.To)
		}
	}
	return out
}

// index is the position of name's first transition to st, -1 if none.
func (r *recorder) index(name string, st State) int {
	return slices.IndexFunc(r.all(), func(t Transition) bool { return t.Program == name && t.To == st })
}

type harness struct {
	t      *testing.T
	sup    *Supervisor
	rec    *recorder
	out    *testrig.LogBuffer
	errOut *testrig.LogBuffer
	cancel context.CancelFunc
	result chan error
}

// start runs a supervisor over programs; it is stopped when the test ends.
func start(t *testing.T, programs ...Program) *harness {
	t.Helper()
	return startWith(t, Options{}, programs...)
}

// startWith is start with some Options set (Rand, Registerer); an
// OnTransition of opts is called after the recorder's.
func startWith(t *testing.T, opts Options, programs ...Program) *harness {
	t.Helper()
	h := &harness{t: t, rec: &recorder{}, out: &testrig.LogBuffer{}, errOut: &testrig.LogBuffer{}, result: make(chan error, 1)}
	opts.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	opts.Stdout, opts.Stderr = h.out, h.errOut
	if also := opts.OnTransition; also != nil {
		opts.OnTransition = func(tr Transition) { h.rec.add(tr); also(tr) }
	} else {
		opts.OnTransition = h.rec.add
	}
	sup, err := New(programs, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	h.sup = sup
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.result <- sup.Run(ctx) }()
	t.Cleanup(func() { h.stop() })
	return h
}

// stop cancels Run and returns its error (once; later calls return nil).
func (h *harness) stop() error {
	h.cancel()
	select {
	case err, ok := <-h.result:
		if ok {
			close(h.result)
		}
		return err
	case <-time.After(30 * time.Second):
		h.t.Fatal("Run did not return 30s after cancel")
		return nil
	}
}

// waitRun waits for Run to return on its own.
func (h *harness) waitRun() error {
	h.t.Helper()
	select {
	case err := <-h.result:
		close(h.result)
		return err
	case <-time.After(30 * time.Second):
		h.t.Fatal("Run did not return")
		return nil
	}
}

// waitState waits, on state-change events, until name is in state st.
func (h *harness) waitState(name string, st State) Status {
	h.t.Helper()
	var last Status
	h.waitUntil(fmt.Sprintf("%s %s", name, st), func() bool {
		last, _ = h.sup.StatusOf(name)
		return last.State == st
	})
	return last
}

func (h *harness) waitUntil(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		changed := h.sup.Changes()
		if cond() {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			h.t.Fatalf("waiting for %s: gave up; status %+v", what, h.sup.Status())
		}
	}
}

// waitOutput polls the program output for text.
func (h *harness) waitOutput(text string) {
	h.t.Helper()
	testrig.WaitFor(h.t, 10*time.Second, "output "+text, func() error {
		if strings.Contains(h.out.String(), text) {
			return nil
		}
		return fmt.Errorf("output so far: %q", h.out.String())
	})
}

// waitOutputCount polls the program output until text appears n times.
func (h *harness) waitOutputCount(text string, n int) {
	h.t.Helper()
	testrig.WaitFor(h.t, 10*time.Second, fmt.Sprintf("output %s %d times", text, n), func() error {
		if strings.Count(h.out.String(), text) >= n {
			return nil
		}
		return fmt.Errorf("output so far: %q", h.out.String())
	})
}

// alive says whether pid is a live process (a zombie is not).
func alive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) S ...: the state follows the last ')'.
	rest := string(data[bytes.LastIndexByte(data, ')')+1:])
	return !strings.HasPrefix(strings.TrimSpace(rest), "Z")
}
