package supervisor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/lbctl/lbctl/internal/testrig"
	"github.com/lbctl/lbctl/metrics"
)

func TestCrashLoopBacksOffThenFatal(t *testing.T) {
	p := prog("crasher", "echo try; exit 1")
	p.StartSecs = time.Second
	p.StartRetries = 2
	h := start(t, p)
	st := h.waitState("crasher", Fatal)

	want := []State{Starting, Backoff, Starting, Backoff, Starting, Fatal}
	if got := h.rec.states("crasher"); !slices.Equal(got, want) {
		t.Errorf("states = %v, want %v", got, want)
	}
	if st.Restarts != 2 || st.LastExit == nil || st.LastExit.Code != 1 {
		t.Errorf("status = %+v, want 2 restarts, last exit 1", st)
	}
	if n := strings.Count(h.out.String(), "crasher | try\n"); n != 3 {
		t.Errorf("ran %d times, want 1 + startretries = 3; output %q", n, h.out.String())
	}
}

func TestSpawnErrorIsAFailedStart(t *testing.T) {
	p := prog("missing", "")
	p.Command = []string{"/nonexistent/binary"}
	p.StartRetries = 1
	h := start(t, p)
	st := h.waitState("missing", Fatal)
	if st.LastExit == nil || st.LastExit.Err == "" {
		t.Errorf("last exit = %+v, want a spawn error", st.LastExit)
	}
}

func TestExitCodesAndAutorestart(t *testing.T) {
	cases := []struct {
		name     string
		restart  Restart
		codes    []int
		exit     int
		restarts bool
	}{
		{"unexpected-expected-code", RestartUnexpected, []int{0}, 0, false},
		{"unexpected-other-code", RestartUnexpected, []int{0}, 2, true},
		{"unexpected-listed-code", RestartUnexpected, []int{0, 2}, 2, false},
		{"always", RestartAlways, []int{0}, 0, true},
		{"never", RestartNever, []int{0}, 1, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := prog("p", "exit "+strconv.Itoa(c.exit))
			p.Autorestart, p.ExitCodes = c.restart, c.codes
			h := start(t, p)
			if c.restarts {
				h.waitUntil("two restarts", func() bool {
					st, _ := h.sup.StatusOf("p")
					return st.Restarts >= 2
				})
				return
			}
			st := h.waitState("p", Exited)
			if st.Restarts != 0 || st.LastExit.Code != c.exit {
				t.Errorf("status = %+v, want no restarts, exit %d", st, c.exit)
			}
		})
	}
}

func TestStopSignalIsSentToTheProgram(t *testing.T) {
	p := prog("app", `trap 'echo got USR1; exit 7' USR1; echo ready; while :; do sleep 0.01; done`)
	p.StopSignal = syscall.SIGUSR1
	h := start(t, p)
	h.waitState("app", Running)
	h.waitOutput("app | ready")
	if err := h.sup.Stop(context.Background(), "app"); err != nil {
		t.Fatal(err)
	}
	st, _ := h.sup.StatusOf("app")
	if st.State != Stopped || st.LastExit.Code != 7 {
		t.Errorf("status = %+v, want STOPPED after exit 7", st)
	}
}

// A program and its child both ignore TERM: after stopwaitsecs the whole
// process group gets SIGKILL, the grandchild included.
func TestStopWaitEscalatesToKillOfTheGroup(t *testing.T) {
	p := prog("stubborn", `trap '' TERM; sleep 100 & echo child $!; wait; wait`)
	p.StopWait = 200 * time.Millisecond
	h := start(t, p)
	h.waitState("stubborn", Running)
	h.waitOutput("stubborn | child ")
	child := childPID(t, h.out.String(), "stubborn | child ")
	if !alive(child) {
		t.Fatalf("grandchild %d not running", child)
	}
	if err := h.sup.Stop(context.Background(), "stubborn"); err != nil {
		t.Fatal(err)
	}
	st, _ := h.sup.StatusOf("stubborn")
	if st.LastExit == nil || st.LastExit.Signal != "KILL" {
		t.Errorf("last exit = %+v, want signal KILL", st.LastExit)
	}
	testrig.WaitFor(t, 5*time.Second, "grandchild gone", func() error {
		if alive(child) {
			return fmt.Errorf("grandchild %d still alive", child)
		}
		return nil
	})
}

func TestStopSignalReachesTheGroup(t *testing.T) {
	h := start(t, prog("parent", `sleep 100 & echo child $!; wait`))
	h.waitState("parent", Running)
	h.waitOutput("parent | child ")
	child := childPID(t, h.out.String(), "parent | child ")
	if err := h.sup.Stop(context.Background(), "parent"); err != nil {
		t.Fatal(err)
	}
	testrig.WaitFor(t, 5*time.Second, "grandchild gone", func() error {
		if alive(child) {
			return fmt.Errorf("grandchild %d still alive", child)
		}
		return nil
	})
}

func childPID(t *testing.T, out, prefix string) int {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(line, prefix); ok {
			pid, err := strconv.Atoi(strings.TrimSpace(rest))
			if err != nil {
				t.Fatalf("bad pid line %q", line)
			}
			return pid
		}
	}
	t.Fatalf("no %q in %q", prefix, out)
	return 0
}

func TestShutdownStopsInReverseStartOrder(t *testing.T) {
	script := `trap 'exit 0' TERM; while :; do sleep 0.01; done`
	a, b, c := prog("a", script), prog("b", script), prog("c", script)
	b.DependsOn = []string{"a"}
	h := start(t, c, b, a) // start order: c, a, b (b after its dependency)
	for _, n := range []string{"a", "b", "c"} {
		h.waitState(n, Running)
	}
	if err := h.stop(); err != nil {
		t.Fatalf("Run = %v, want nil after cancel", err)
	}
	var stops []string
	for _, tr := range h.rec.all() {
		if tr.To == Stopping || tr.To == Stopped {
			stops = append(stops, tr.Program+":"+tr.To.String())
		}
	}
	want := []string{"b:STOPPING", "b:STOPPED", "a:STOPPING", "a:STOPPED", "c:STOPPING", "c:STOPPED"}
	if !slices.Equal(stops, want) {
		t.Errorf("stop sequence = %v, want %v", stops, want)
	}
}

func TestDependsOnWaitsForRunning(t *testing.T) {
	a := prog("a", "exec sleep 100")
	a.StartSecs = 100 * time.Millisecond
	b := prog("b", "exec sleep 100")
	b.DependsOn = []string{"a"}
	h := start(t, b, a)
	h.waitState("b", Running)
	if ia, ib := h.rec.index("a", Running), h.rec.index("b", Running); ia < 0 || ib < ia {
		t.Errorf("a RUNNING at %d, b RUNNING at %d: b started before a was up; %v", ia, ib, h.rec.all())
	}
}

func TestGateHoldsStartUntilOpened(t *testing.T) {
	p := prog("nginx", "exec sleep 100")
	p.Gates = []string{"first-render"}
	h := start(t, p)
	h.waitUntil("note", func() bool {
		st, _ := h.sup.StatusOf("nginx")
		return st.Note == "waiting for gate first-render"
	})
	if st, _ := h.sup.StatusOf("nginx"); st.State != Stopped || st.PID != 0 {
		t.Fatalf("status before the gate opened = %+v", st)
	}
	h.sup.OpenGate("first-render")
	h.waitState("nginx", Running)
}

func TestEssentialFatalStopsEverything(t *testing.T) {
	other := prog("other", `trap 'exit 0' TERM; while :; do sleep 0.01; done`)
	bad := prog("bad", "exit 3")
	bad.StartSecs, bad.StartRetries, bad.Essential = time.Second, 1, true
	h := start(t, other, bad)
	err := h.waitRun()
	var ee *EssentialError
	if !errors.As(err, &ee) || ee.Program != "bad" || ee.State != Fatal {
		t.Fatalf("Run = %v, want an EssentialError for bad", err)
	}
	if got := h.rec.states("other"); got[len(got)-1] != Stopped {
		t.Errorf("other's states = %v, want it stopped last", got)
	}
}

func TestWatchPIDFollowsRestarts(t *testing.T) {
	p := prog("app", "exec sleep 100")
	h := start(t, p)
	pids := h.sup.WatchPID("app")
	first := waitPID(t, pids, func(pid int) bool { return pid != 0 })
	if got := h.sup.PID("app"); got != first {
		t.Errorf("PID = %d, watch said %d", got, first)
	}
	syscall.Kill(first, syscall.SIGKILL)
	second := waitPID(t, pids, func(pid int) bool { return pid != 0 && pid != first })
	if st, _ := h.sup.StatusOf("app"); st.Restarts != 1 || st.PID != second {
		t.Errorf("status = %+v, want 1 restart, pid %d", st, second)
	}
}

func waitPID(t *testing.T, ch <-chan int, ok func(int) bool) int {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case pid := <-ch:
			if ok(pid) {
				return pid
			}
		case <-deadline:
			t.Fatal("no matching pid")
		}
	}
}

func TestControlActions(t *testing.T) {
	p := prog("app", `trap 'echo hup' HUP; echo ready; while :; do sleep 0.01; done`)
	p.Autostart = false
	h := start(t, p)
	ctx := context.Background()
	if err := h.sup.Start(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	if err := h.sup.Start(ctx, "app"); !errors.Is(err, ErrAlreadyStarted) {
		t.Errorf("second Start = %v, want ErrAlreadyStarted", err)
	}
	h.waitOutput("app | ready")
	if err := h.sup.Signal(ctx, "app", syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	h.waitOutput("app | hup")
	pid := h.sup.PID("app")
	if err := h.sup.Restart(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	if got := h.sup.PID("app"); got == pid || got == 0 {
		t.Errorf("pid after restart = %d (was %d)", got, pid)
	}
	if err := h.sup.Stop(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	if err := h.sup.Signal(ctx, "app", syscall.SIGHUP); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Signal on a stopped program = %v, want ErrNotRunning", err)
	}
	if err := h.sup.Stop(ctx, "nope"); !errors.Is(err, ErrUnknownProgram) {
		t.Errorf("Stop(nope) = %v, want ErrUnknownProgram", err)
	}
}

func TestForwardOnlyToProgramsThatAsk(t *testing.T) {
	script := `trap 'echo usr1' USR1; echo ready; while :; do sleep 0.01; done`
	asks, deaf := prog("asks", script), prog("deaf", script)
	asks.ForwardSignals = []syscall.Signal{syscall.SIGUSR1}
	h := start(t, asks, deaf)
	h.waitOutput("asks | ready")
	h.waitOutput("deaf | ready")
	h.sup.Forward(context.Background(), syscall.SIGUSR1)
	h.waitOutput("asks | usr1")
	if strings.Contains(h.out.String(), "deaf | usr1") {
		t.Error("deaf got USR1")
	}
	if got := h.sup.ForwardedSignals(); !slices.Equal(got, []syscall.Signal{syscall.SIGUSR1}) {
		t.Errorf("ForwardedSignals = %v", got)
	}
}

func TestApplyAddsRemovesAndRestartsChanged(t *testing.T) {
	keep, change, drop := prog("keep", "exec sleep 100"), prog("change", "exec sleep 100"), prog("drop", "exec sleep 100")
	h := start(t, keep, change, drop)
	for _, n := range []string{"keep", "change", "drop"} {
		h.waitState(n, Running)
	}
	keepPID, changePID := h.sup.PID("keep"), h.sup.PID("change")
	changed := change
	changed.Env = []string{"X=1"}
	added := prog("added", "exec sleep 100")
	if err := h.sup.Apply(context.Background(), []Program{keep, changed, added}); err != nil {
		t.Fatal(err)
	}
	h.waitState("added", Running)
	h.waitState("change", Running)
	if got := h.sup.PID("keep"); got != keepPID {
		t.Errorf("keep restarted: pid %d -> %d", keepPID, got)
	}
	if got := h.sup.PID("change"); got == changePID {
		t.Errorf("change not restarted (pid %d)", got)
	}
	if _, err := h.sup.StatusOf("drop"); !errors.Is(err, ErrUnknownProgram) {
		t.Errorf("drop still there: %v", err)
	}
	var names []string
	for _, st := range h.sup.Status() {
		names = append(names, st.Name)
	}
	if !slices.Equal(names, []string{"keep", "change", "added"}) {
		t.Errorf("programs = %v", names)
	}
}

func TestNewRejectsBadSets(t *testing.T) {
	a := prog("a", "true")
	b := prog("b", "true")
	a.DependsOn, b.DependsOn = []string{"b"}, []string{"a"}
	if _, err := New([]Program{a, b}, Options{}); err == nil || !strings.Contains(err.Error(), "cycle") {
		t.Errorf("cycle: err = %v", err)
	}
	c := prog("c", "true")
	c.DependsOn = []string{"ghost"}
	if _, err := New([]Program{c}, Options{}); !errors.Is(err, ErrUnknownProgram) {
		t.Errorf("unknown dependency: err = %v", err)
	}
	if _, err := New([]Program{prog("x", "true"), prog("x", "true")}, Options{}); err == nil {
		t.Error("duplicate names accepted")
	}
}

func TestOutputIsPrefixedAndLogged(t *testing.T) {
	p := prog("talker", `echo out1; echo err1 >&2; printf 'no newline'`)
	p.LogFile = filepath.Join(t.TempDir(), "talker.log")
	h := start(t, p)
	h.waitOutput("talker | no newline\n")
	testrig.WaitFor(t, 5*time.Second, "stderr", func() error {
		if !strings.Contains(h.errOut.String(), "talker | err1\n") {
			return fmt.Errorf("stderr %q", h.errOut.String())
		}
		return nil
	})
	testrig.WaitFor(t, 5*time.Second, "log file", func() error {
		data, _ := os.ReadFile(p.LogFile)
		if !strings.Contains(string(data), "out1\n") || !strings.Contains(string(data), "err1\n") {
			return fmt.Errorf("log file %q", data)
		}
		return nil
	})
}

func TestStartAfterFatalAndWhileWaiting(t *testing.T) {
	bad := prog("bad", `test -f "$MARK" || exit 1; exec sleep 100`)
	mark := filepath.Join(t.TempDir(), "mark")
	bad.Env = []string{"MARK=" + mark}
	bad.StartSecs, bad.StartRetries = 50*time.Millisecond, 0
	gated := prog("gated", "exec sleep 100")
	gated.Autostart, gated.Gates = false, []string{"ready"}
	h := start(t, bad, gated)
	h.waitState("bad", Fatal)
	os.WriteFile(mark, nil, 0o644)
	ctx := context.Background()
	if err := h.sup.Start(ctx, "bad"); err != nil {
		t.Fatalf("Start after FATAL: %v", err)
	}
	if st, _ := h.sup.StatusOf("bad"); st.State != Running {
		t.Errorf("bad = %v after Start", st.State)
	}
	if err := h.sup.Start(ctx, "gated"); err != nil {
		t.Fatalf("Start of a gated program: %v", err)
	}
	if st, _ := h.sup.StatusOf("gated"); st.State != Stopped || !st.Waiting || st.Note != "waiting for gate ready" {
		t.Errorf("gated = %+v, want STOPPED waiting for gate ready", st)
	}
	h.sup.OpenGate("ready")
	h.waitState("gated", Running)
}

func TestRestartFromRunningIsReportedWithTheNewPID(t *testing.T) {
	h := start(t, prog("flappy", "exec sleep 100"))
	first := h.waitState("flappy", Running).PID
	syscall.Kill(first, syscall.SIGKILL)
	h.waitUntil("restart", func() bool {
		st, _ := h.sup.StatusOf("flappy")
		return st.PID != 0 && st.PID != first
	})
	var pids []int
	for _, tr := range h.rec.all() {
		if tr.To == Running {
			pids = append(pids, tr.PID)
		}
	}
	if len(pids) != 2 || pids[0] != first || pids[1] == first {
		t.Errorf("RUNNING transitions with pids %v, want %d then a new one", pids, first)
	}
}

// On synctest's clock, the backoff delays are exactly the capped, jittered
// exponential ones: nothing is retried before its delay has passed, and the
// retry comes as soon as it has.
func TestBackoffDelaysUseTheClock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := prog("crasher", "exit 1")
		p.StartSecs, p.StartRetries = time.Hour, 2
		p.BackoffMin, p.BackoffMax = 100*time.Millisecond, 150*time.Millisecond
		h := startWith(t, Options{Rand: func() float64 { return 0 }}, p)
		// rnd 0: half the nominal delay. Nominal: 100ms, then 200ms capped at 150ms.
		for i, want := range []time.Duration{50 * time.Millisecond, 75 * time.Millisecond} {
			// The clock stands still while the crasher runs, so it is now
			// what it was when the backoff began. Wait for the recorded
			// transition, not the status: the status changes first.
			h.waitUntil(fmt.Sprintf("backoff %d recorded", i+1), func() bool {
				got := h.rec.states("crasher")
				return len(got) >= 2*(i+1) && got[2*i+1] == Backoff
			})
			if got := h.rec.states("crasher"); len(got) != 2*(i+1) {
				t.Fatalf("states on entering backoff %d: %v", i+1, got)
			}
			time.Sleep(want - time.Nanosecond)
			synctest.Wait()
			if got := h.rec.states("crasher"); len(got) != 2*(i+1) {
				t.Fatalf("states %s into backoff %d, before its %s delay: %v", want-time.Nanosecond, i+1, want, got)
			}
			time.Sleep(time.Nanosecond)
			synctest.Wait()
			if got := h.rec.states("crasher"); len(got) == 2*(i+1) {
				t.Fatalf("not retried when the %s delay of backoff %d passed: %v", want, i+1, got)
			}
		}
		h.waitState("crasher", Fatal)
	})
}

func TestMetricsFollowStatesAndRestarts(t *testing.T) {
	reg := metrics.NewRegistry()
	h := startWith(t, Options{Registerer: reg}, prog("app", "exec sleep 100"))
	pid := h.waitState("app", Running).PID
	syscall.Kill(pid, syscall.SIGKILL)
	h.waitUntil("restart", func() bool { st, _ := h.sup.StatusOf("app"); return st.Restarts == 1 && st.State == Running })
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"lbctl_program_restarts_total", map[string]string{"program": "app"}, 1},
		{"lbctl_program_state", map[string]string{"program": "app", "state": "RUNNING"}, 1},
		{"lbctl_program_state", map[string]string{"program": "app", "state": "STOPPED"}, 0},
	} {
		if got, ok := metricValue(t, reg, c.name, c.labels); !ok || got != c.want {
			t.Errorf("%s%v = %v (found %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
}

func TestSupervisorsSharingARegistryShareMetrics(t *testing.T) {
	reg := metrics.NewRegistry()
	a, b := newMetrics(reg), newMetrics(reg)
	if a.state != b.state || a.restarts != b.restarts {
		t.Fatal("a second supervisor on the same registry got metrics of its own")
	}
}

// metricValue finds one counter or gauge sample in what reg exposes, read
// back with Prometheus's own text parser.
func metricValue(t *testing.T, reg *metrics.Registry, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	var text bytes.Buffer
	if err := reg.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(text.Bytes()))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, text.String())
	}
samples:
	for _, m := range families[name].GetMetric() {
		for _, l := range m.GetLabel() {
			if labels[l.GetName()] != l.GetValue() {
				continue samples
			}
		}
		if m.Counter != nil {
			return m.Counter.GetValue(), true
		}
		return m.Gauge.GetValue(), true
	}
	return 0, false
}

func TestApplyAfterShutdownAddsNothing(t *testing.T) {
	h := start(t, prog("a", "exec sleep 100"))
	h.waitState("a", Running)
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
	if err := h.sup.Apply(context.Background(), []Program{prog("late", "exec sleep 100")}); !errors.Is(err, ErrSupervisorDone) {
		t.Errorf("Apply after Run = %v, want ErrSupervisorDone", err)
	}
	if st := h.sup.Status(); len(st) != 0 {
		t.Errorf("programs after shutdown: %+v", st)
	}
}

// A program's last output is logged before its exit is reported; a
// grandchild that keeps the output pipe open does not hold the exit up.
func TestExitWaitsForLastOutputButNotForGrandchildren(t *testing.T) {
	last := prog("last-words", "echo goodbye; exit 3")
	last.Autorestart = RestartNever
	holder := prog("holder", "sleep 3 & echo started; exit 4")
	holder.Autorestart = RestartNever
	h := start(t, last, holder)
	h.waitState("last-words", Exited)
	if !strings.Contains(h.out.String(), "last-words | goodbye\n") {
		t.Fatalf("exit reported before the last output line: %q", h.out.String())
	}
	if st := h.waitState("holder", Exited); st.LastExit == nil || st.LastExit.Code != 4 {
		t.Fatalf("holder: %+v, want EXITED with code 4 while its grandchild holds the pipe", st)
	}
}

// nohup starts lbctl with SIGHUP ignored; its programs must still be able to
// trap SIGHUP (exec keeps an ignored signal ignored). The test runs itself
// again in a process started with SIGHUP and SIGINT ignored.
func TestProgramsStartWithDefaultSignalsThoughLbctlIgnoresThem(t *testing.T) {
	const child = "LBCTL_TEST_STARTED_IGNORING_HUP_INT"
	if os.Getenv(child) == "" {
		cmd := exec.Command("sh", "-c", `trap '' HUP INT; exec "$0" "$@"`, os.Args[0],
			"-test.run=^TestProgramsStartWithDefaultSignalsThoughLbctlIgnoresThem$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), child+"=1")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS") {
			t.Fatalf("in a process started with SIGHUP and SIGINT ignored: %v\n%s", err, out)
		}
		return
	}
	if !signal.Ignored(syscall.SIGHUP) || !signal.Ignored(syscall.SIGINT) {
		t.Fatal("not started with SIGHUP and SIGINT ignored")
	}
	p := prog("app", `trap 'echo hup' HUP; trap 'echo int' INT; echo ready; while :; do sleep 0.01; done`)
	h := start(t, p)
	h.waitOutput("app | ready")
	for sig, line := range map[syscall.Signal]string{syscall.SIGHUP: "app | hup", syscall.SIGINT: "app | int"} {
		if err := h.sup.Signal(context.Background(), "app", sig); err != nil {
			t.Fatal(err)
		}
		h.waitOutput(line)
	}
	// lbctl itself still ignores them: this would end the test binary.
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if err := h.sup.Signal(context.Background(), "app", syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	h.waitOutputCount("app | hup", 2)
}
