package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
)

// appProcess is the app that `lbctl register -- COMMAND ARGS…` runs. It is a
// plain os/exec child in its own process group until the supervisor package
// can take over: startApp and these three methods are all register uses.
type appProcess struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // Wait's error, set before done is closed
}

// startApp starts argv with lbctl's stdout, stderr and environment, in its own
// process group, killed if lbctl dies.
func startApp(argv []string) (*appProcess, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	a := &appProcess{cmd: cmd, done: make(chan struct{})}
	go func() { a.err = cmd.Wait(); close(a.done) }()
	return a, nil
}

// Done is closed when the app has exited.
func (a *appProcess) Done() <-chan struct{} { return a.done }

// Signal sends sig to the app's process group.
func (a *appProcess) Signal(sig syscall.Signal) error {
	if err := syscall.Kill(-a.cmd.Process.Pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal app: %w", err)
	}
	return nil
}

// ExitCode is the app's exit code once Done is closed: its own code, or
// 128+N when signal N killed it.
func (a *appProcess) ExitCode() int {
	var ee *exec.ExitError
	if !errors.As(a.err, &ee) {
		if a.err != nil {
			return 1
		}
		return 0
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ee.ExitCode()
}
