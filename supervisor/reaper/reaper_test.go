package reaper

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lbctl/lbctl/internal/testrig"
)

// These tests run the real lbctl binary as PID 1 of a new PID namespace
// (unshare --pid --fork --kill-child --mount-proc), as in a container.

func buildLbctl(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for unshare --pid")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("unshare (util-linux) not installed")
	}
	bin := filepath.Join(t.TempDir(), "lbctl")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/lbctl/lbctl/cmd/lbctl").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// runAsPID1 starts lbctl run with config as PID 1 of a new PID namespace; it
// returns the unshare command, lbctl's host pid and its output. The config
// file is left in the directory *cfgPath names.
func runAsPID1(t *testing.T, bin, config string, cfgPath *string) (*exec.Cmd, int, *testrig.LogBuffer) {
	t.Helper()
	dir := t.TempDir()
	*cfgPath = filepath.Join(dir, "lbctl.yaml")
	writeConfig(t, *cfgPath, config)
	return startAsPID1(t, bin, "run", "-c", *cfgPath)
}

// startAsPID1 starts lbctl with args as PID 1 of a new PID namespace; it
// returns the unshare command, lbctl's host pid and its output.
func startAsPID1(t *testing.T, bin string, args ...string) (*exec.Cmd, int, *testrig.LogBuffer) {
	t.Helper()
	out := &testrig.LogBuffer{}
	cmd := exec.Command("unshare", append([]string{"--pid", "--fork", "--kill-child", "--mount-proc", bin}, args...)...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.WaitDelay = 5 * time.Second // orphans may hold the output pipe
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	var init int
	testrig.WaitFor(t, 10*time.Second, "lbctl as PID 1", func() error {
		for _, c := range children(cmd.Process.Pid) {
			if c.comm == "lbctl" {
				init = c.pid
				return nil
			}
		}
		return errors.New("not started yet")
	})
	return cmd, init, out
}

// writeConfig writes an lbctl.yaml with its control socket next to it.
func writeConfig(t *testing.T, path, programs string) {
	t.Helper()
	config := fmt.Sprintf("control:\n  socket: %s/lbctl.sock\n%s", filepath.Dir(path), programs)
	if err := os.WriteFile(path, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
}

type proc struct {
	pid, ppid   int
	comm, state string
}

// children lists the processes whose parent is pid, from /proc.
func children(pid int) []proc {
	entries, _ := os.ReadDir("/proc")
	var out []proc
	for _, e := range entries {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, ok := readProc(n); ok && p.ppid == pid {
			out = append(out, p)
		}
	}
	return out
}

func readProc(pid int) (proc, bool) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return proc{}, false
	}
	s := string(data)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	fields := strings.Fields(s[end+1:])
	ppid, _ := strconv.Atoi(fields[1])
	return proc{pid: pid, ppid: ppid, comm: s[open+1 : end], state: fields[0]}, true
}

func TestPID1ReapsOrphansAndStopsCleanly(t *testing.T) {
	bin := buildLbctl(t)
	var cfgPath string
	programs := `programs:
  - name: orphaner
    command: [sh, -c, 'for i in 1 2 3 4 5; do (sh -c "exit 0" &); done; (exec sleep 1000 &); echo spawned; exec sleep 1000']
    startsecs: 0
  - name: other
    command: [sleep, "1000"]
    startsecs: 0
`
	cmd, init, out := runAsPID1(t, bin, programs, &cfgPath)
	testrig.WaitFor(t, 10*time.Second, "orphans spawned", func() error {
		if !strings.Contains(out.String(), "orphaner | spawned") {
			return fmt.Errorf("output: %s", out.String())
		}
		return nil
	})

	expectOrphansReaped(t, init)

	// SIGHUP to PID 1 reaches the worker, which adds the new program and
	// forwards it the signal it asks for.
	writeConfig(t, cfgPath, programs+`  - name: added
    command: [sh, -c, "trap 'echo got-usr1' USR1; echo added-up; while :; do sleep 0.02; done"]
    startsecs: 0
    forward_signals: [USR1]
`)
	if err := syscall.Kill(init, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitOutput(t, out, "SIGHUP: programs reloaded")
	waitOutput(t, out, "added | added-up")
	if err := syscall.Kill(init, syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	waitOutput(t, out, "added | got-usr1")

	// docker stop: SIGTERM to PID 1, forwarded to the worker, clean exit.
	if err := syscall.Kill(init, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := waitExit(t, cmd); err != nil {
		t.Fatalf("lbctl exited with %v after SIGTERM; output:\n%s", err, out.String())
	}
	for _, want := range []string{"program=other from=RUNNING to=STOPPING", "program=orphaner from=STOPPING to=STOPPED"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

// The app image's entrypoint is lbctl register -- app: as PID 1 it must reap
// the app's orphans as lbctl run does.
func TestPID1RegisterWithAnAppReapsOrphans(t *testing.T) {
	bin := buildLbctl(t)
	port := testrig.FreePort(t) // nothing listens: the app is never registered
	cmd, init, out := startAsPID1(t, bin, "register",
		"--consul-addr", testrig.LoopbackAddr(testrig.FreePort(t)), "--name", "orphaner", "--port", strconv.Itoa(port),
		"--drain-timeout", "1s", "--stop-wait", "1s", "--",
		"sh", "-c", `for i in 1 2 3 4 5; do (sh -c "exit 0" &); done; (exec sleep 1000 &); echo spawned; exec sleep 1000`)
	waitOutput(t, out, "spawned")
	expectOrphansReaped(t, init)
	// docker stop: SIGTERM to PID 1 reaches the worker, which stops the app.
	if err := syscall.Kill(init, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err := waitExit(t, cmd)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 128+int(syscall.SIGTERM) {
		t.Fatalf("exit = %v, want the app's 143 (SIGTERM); output:\n%s", err, out.String())
	}
}

func TestPID1PassesOnEssentialFailure(t *testing.T) {
	bin := buildLbctl(t)
	var cfgPath string
	cmd, _, out := runAsPID1(t, bin, `programs:
  - name: doomed
    command: [sh, -c, "exit 4"]
    essential: true
    startretries: 0
`, &cfgPath)
	err := waitExit(t, cmd)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("exit = %v, want exit status 1; output:\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "essential program doomed is FATAL") {
		t.Errorf("output lacks the reason:\n%s", out.String())
	}
}

// expectOrphansReaped: the orphans reparented to lbctl's init, the
// short-lived ones, are reaped, leaving the worker and one long-lived sleep;
// killed, that sleep is reaped too.
func expectOrphansReaped(t *testing.T, init int) {
	t.Helper()
	var orphan int
	testrig.WaitFor(t, 10*time.Second, "zombies reaped", func() error {
		orphan = 0
		var worker bool
		for _, c := range children(init) {
			switch {
			case c.state == "Z":
				return fmt.Errorf("zombie %d (%s) under PID 1", c.pid, c.comm)
			case c.comm == "lbctl":
				worker = true
			case c.comm == "sleep":
				orphan = c.pid
			}
		}
		if !worker || orphan == 0 {
			return fmt.Errorf("want the worker and the orphaned sleep under PID 1, have %+v", children(init))
		}
		return nil
	})

	// Kill the orphan: PID 1 must reap it, so it vanishes from /proc.
	if err := syscall.Kill(orphan, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testrig.WaitFor(t, 10*time.Second, "orphan reaped", func() error {
		if p, ok := readProc(orphan); ok && p.ppid == init {
			return fmt.Errorf("orphan %d still there, state %s", orphan, p.state)
		}
		return nil
	})
}

func waitOutput(t *testing.T, out *testrig.LogBuffer, text string) {
	t.Helper()
	testrig.WaitFor(t, 10*time.Second, text, func() error {
		if !strings.Contains(out.String(), text) {
			return fmt.Errorf("output:\n%s", out.String())
		}
		return nil
	})
}

func waitExit(t *testing.T, cmd *exec.Cmd) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("lbctl did not exit")
		return nil
	}
}
