package main

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lbctl/lbctl/internal/testrig"
	"github.com/lbctl/lbctl/supervisor"
	"github.com/lbctl/lbctl/supervisor/control"
)

// supervisedConfig writes an lbctl.yaml with a control socket in a temp dir.
func supervisedConfig(t *testing.T, programs string) (cfgPath, socket string) {
	t.Helper()
	dir := t.TempDir()
	socket = filepath.Join(dir, "lbctl.sock")
	cfgPath = filepath.Join(dir, "lbctl.yaml")
	if err := os.WriteFile(cfgPath, []byte("control:\n  socket: "+socket+"\n"+programs), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfgPath, socket
}

// runLbctl runs `lbctl args...` in-process and returns its stdout and error.
// The buffer is safe for concurrent writes: supervised programs' output goes
// to the command's stdout too.
func runLbctl(ctx context.Context, args ...string) (string, error) {
	root := newRootCmd()
	var out testrig.LogBuffer
	root.SetOut(&out)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	return out.String(), err
}

// startRun starts `lbctl run` in-process; cancel stops it, result has its error.
func startRun(t *testing.T, cfgPath, socket string) (cancel func(), result <-chan error) {
	t.Helper()
	ctx, cancelRun := context.WithCancel(context.Background())
	res := make(chan error, 1)
	go func() {
		_, err := runLbctl(ctx, "run", "-c", cfgPath, "--log-level", "warn")
		res <- err
	}()
	t.Cleanup(cancelRun)
	testrig.WaitFor(t, 10*time.Second, "control socket", func() error {
		_, err := control.NewClient(socket).Status(context.Background())
		return err
	})
	return cancelRun, res
}

func waitResult(t *testing.T, res <-chan error) error {
	t.Helper()
	select {
	case err := <-res:
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("lbctl run did not return")
		return nil
	}
}

func TestRunStatusCtlAndCleanStop(t *testing.T) {
	cfgPath, socket := supervisedConfig(t, `programs:
  - name: app
    command: [sleep, "100"]
    startsecs: 0
  - name: sidecar
    command: [sleep, "100"]
    startsecs: 0.1
    depends_on: [app]
`)
	cancel, res := startRun(t, cfgPath, socket)
	ctx := context.Background()
	var reply control.StatusReply
	testrig.WaitFor(t, 10*time.Second, "both RUNNING", func() error {
		out, err := runLbctl(ctx, "status", "-c", cfgPath, "--json")
		if err != nil {
			return err
		}
		if err := json.Unmarshal([]byte(out), &reply); err != nil {
			return err
		}
		for _, p := range reply.Programs {
			if p.State != supervisor.Running {
				return errors.New(out)
			}
		}
		return nil
	})
	if out, err := runLbctl(ctx, "ctl", "restart", "app", "--socket", socket); err != nil || !strings.Contains(out, "app: restart ok") {
		t.Fatalf("ctl restart: %q %v", out, err)
	}
	if _, err := runLbctl(ctx, "ctl", "signal", "app", "CONT", "--socket", socket); err != nil {
		t.Fatalf("ctl signal: %v", err)
	}
	out, err := runLbctl(ctx, "status", "--socket", socket)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "NAME") || !strings.Contains(lines[1], "app") ||
		!strings.Contains(lines[1], "RUNNING") || !strings.Contains(lines[1], "signal TERM") {
		t.Errorf("status table:\n%s", out)
	}
	if _, err := runLbctl(ctx, "ctl", "stop", "ghost", "--socket", socket); err == nil || !strings.Contains(err.Error(), "no such program") {
		t.Errorf("ctl stop ghost = %v", err)
	}
	if _, err := runLbctl(ctx, "ctl", "frobnicate", "app", "--socket", socket); exitCode(err) != 2 {
		t.Errorf("bad ctl action: %v, want a usage error", err)
	}
	cancel()
	if err := waitResult(t, res); err != nil {
		t.Fatalf("run after cancel = %v, want nil (exit 0)", err)
	}
	if _, err := os.Stat(socket); !os.IsNotExist(err) {
		t.Errorf("socket left behind: %v", err)
	}
}

func TestRunBadProgramConfigExitsWithFileAndLine(t *testing.T) {
	cfgPath, _ := supervisedConfig(t, `programs:
  - name: nginx
    command: [nginx]
    stopsignal: GRACEFUL
`)
	_, err := runLbctl(context.Background(), "run", "-c", cfgPath)
	if exitCode(err) != exitConfig || !strings.Contains(err.Error(), "lbctl.yaml:6: programs[0].stopsignal") {
		t.Fatalf("err = %v (exit %d), want exit %d naming lbctl.yaml:6", err, exitCode(err), exitConfig)
	}
}

func TestRunEssentialFailureExitsOne(t *testing.T) {
	cfgPath, _ := supervisedConfig(t, `programs:
  - name: keeper
    command: [sleep, "100"]
    startsecs: 0
  - name: doomed
    command: [sh, -c, "exit 9"]
    essential: true
    startretries: 0
    startsecs: 1
`)
	_, err := runLbctl(context.Background(), "run", "-c", cfgPath, "--log-level", "error")
	var ee *supervisor.EssentialError
	if exitCode(err) != 1 || !errors.As(err, &ee) || ee.Program != "doomed" {
		t.Fatalf("err = %v, want exit 1 for essential program doomed", err)
	}
}

func TestRunRefusesGateNothingOpens(t *testing.T) {
	cfgPath, _ := supervisedConfig(t, `programs:
  - name: nginx
    command: [sleep, "100"]
    wait_for_gates: [first-render]
`)
	_, err := runLbctl(context.Background(), "run", "-c", cfgPath)
	if exitCode(err) != exitConfig || !strings.Contains(err.Error(), `gate "first-render"`) {
		t.Fatalf("err = %v", err)
	}
}

// runInProcess runs lbctl run's runLB on cfgPath until the test ends, and
// returns its options (for o.reload, o.sup) and the context it runs under.
func runInProcess(t *testing.T, cfgPath string, log *slog.Logger) (*runOptions, context.Context) {
	t.Helper()
	o, err := newRunOptions(&globalOptions{configPath: cfgPath}, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan error, 1)
	go func() { res <- runLB(ctx, o) }()
	t.Cleanup(func() { cancel(); waitResult(t, res) })
	return o, ctx
}

func TestReloadAppliesProgramChanges(t *testing.T) {
	cfgPath, socket := supervisedConfig(t, `programs:
  - name: keep
    command: [sleep, "100"]
    startsecs: 0
  - name: drop
    command: [sleep, "100"]
    startsecs: 0
`)
	o, ctx := runInProcess(t, cfgPath, slog.New(slog.DiscardHandler))
	waitRunning := func(name string) {
		t.Helper()
		testrig.WaitFor(t, 10*time.Second, name+" RUNNING", func() error {
			st, err := o.sup.StatusOf(name)
			if err != nil || st.State != supervisor.Running {
				return errors.New("not yet")
			}
			return nil
		})
	}
	waitRunning("keep")
	keepPID := o.sup.PID("keep")
	os.WriteFile(cfgPath, []byte("control:\n  socket: "+socket+`
programs:
  - name: keep
    command: [sleep, "100"]
    startsecs: 0
  - name: added
    command: [sleep, "100"]
    startsecs: 0
`), 0o644)
	o.reload(ctx, nil)
	waitRunning("added")
	if _, err := o.sup.StatusOf("drop"); !errors.Is(err, supervisor.ErrUnknownProgram) {
		t.Errorf("drop still supervised: %v", err)
	}
	if o.sup.PID("keep") != keepPID {
		t.Error("unchanged program was restarted")
	}
	os.WriteFile(cfgPath, []byte("programs: [{name: x}]\n"), 0o644)
	o.reload(ctx, nil) // invalid: logged, nothing changes
	if _, err := o.sup.StatusOf("added"); err != nil {
		t.Errorf("invalid reload changed the programs: %v", err)
	}
}

func TestBeforeStopRunsBeforeProgramsStop(t *testing.T) {
	cfgPath, _ := supervisedConfig(t, `programs:
  - name: app
    command: [sleep, "100"]
    startsecs: 0
`)
	o, err := newRunOptions(&globalOptions{configPath: cfgPath}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	stateAtBeforeStop := make(chan supervisor.State, 1)
	o.beforeStop = func(context.Context) {
		st, _ := o.sup.StatusOf("app")
		stateAtBeforeStop <- st.State
	}
	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan error, 1)
	go func() { res <- runLB(ctx, o) }()
	testrig.WaitFor(t, 10*time.Second, "app RUNNING", func() error {
		if st, _ := o.sup.StatusOf("app"); st.State != supervisor.Running {
			return errors.New("not yet")
		}
		return nil
	})
	cancel()
	if err := waitResult(t, res); err != nil {
		t.Fatal(err)
	}
	if st := <-stateAtBeforeStop; st != supervisor.Running {
		t.Errorf("app was %s when beforeStop ran, want RUNNING", st)
	}
}

func TestFormatUptimeLikeSupervisorctl(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0:                                     "0:00:00",
		61*time.Second + 500*time.Millisecond: "0:01:01",
		26*time.Hour + 3*time.Minute:          "1 days, 2:03:00",
	} {
		if got := formatUptime(d); got != want {
			t.Errorf("formatUptime(%s) = %q, want %q", d, got, want)
		}
	}
}
