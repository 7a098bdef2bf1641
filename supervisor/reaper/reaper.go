// Package reaper is lbctl's PID 1: a tiny init that re-executes lbctl as
// its only child (the worker), forwards every signal it gets to the worker,
// reaps every zombie in the container, and exits with the worker's code.
//
// Why a separate process. PID 1 must reap orphaned grandchildren, which
// means calling wait4(-1). In the same process, that wait4(-1) would also
// reap the supervisor's own children — and any `nginx -t` the reload
// controller runs with exec.Command — before their exec.Cmd.Wait gets to
// them, which then fails with "wait: no child process" and loses the exit
// status. containerpilot hit exactly this race and ended up with the same
// split. The alternative, one goroutine owning all waiting and dispatching
// exits by pid, works only if no code in the binary ever calls
// exec.Cmd.Wait or os/exec's Run/Output: too fragile for a binary that
// several packages share. With the split, the worker is an ordinary process
// whose packages use os/exec freely, and init's only child is the worker, so
// its wait4(-1) can take nothing anyone else is waiting for.
//
// The cost is one more small process (a few MB of RSS) and one signal hop.
// When lbctl is not PID 1 (tests, `docker run --init`, systemd), no split
// happens: orphans go to the real init.
package reaper

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

// WorkerEnv is set in the worker's environment so it does not become init again.
const WorkerEnv = "LBCTL_INIT_WORKER"

// ShouldInit reports whether this process is PID 1 and not yet the worker.
func ShouldInit() bool { return os.Getpid() == 1 && os.Getenv(WorkerEnv) == "" }

// RunInit starts the worker (this binary, same arguments, WorkerEnv=1),
// forwards it every signal, reaps every zombie, and returns the worker's
// exit code (128+N if signal N killed it) once it has exited.
func RunInit(log *slog.Logger) int {
	sigs := make(chan os.Signal, 64)
	signal.Notify(sigs) // every signal, SIGCHLD included, before the worker exists
	defer signal.Stop(sigs)

	worker, err := startWorker()
	if err != nil {
		log.Error("init: start worker", "err", err)
		return 1
	}
	log.Debug("init: worker started", "pid", worker)
	for sig := range sigs {
		s, ok := sig.(syscall.Signal)
		if !ok {
			continue
		}
		switch s {
		case syscall.SIGCHLD:
			if status, exited := reapAll(worker); exited {
				reapAll(0) // whatever else is already a zombie
				return exitCode(status)
			}
		case syscall.SIGURG, syscall.SIGPIPE:
			// SIGURG: the Go runtime's own preemption; SIGPIPE: ours alone.
		default:
			if err := syscall.Kill(worker, s); err != nil && !errors.Is(err, syscall.ESRCH) {
				log.Warn("init: forward signal", "signal", s, "err", err)
			}
		}
	}
	return 1
}

// startWorker re-executes this binary with the same arguments. The worker
// keeps init's stdio, session and process group.
func startWorker() (int, error) {
	exe, err := os.Executable()
	if err != nil {
		return 0, fmt.Errorf("find own executable: %w", err)
	}
	env := append(os.Environ(), WorkerEnv+"=1")
	pid, err := syscall.ForkExec(exe, os.Args, &syscall.ProcAttr{
		Env:   env,
		Files: []uintptr{0, 1, 2},
	})
	if err != nil {
		return 0, fmt.Errorf("start %s: %w", exe, err)
	}
	return pid, nil
}

// reapAll reaps every child that has exited; it reports the worker's wait
// status if the worker was among them.
func reapAll(worker int) (status syscall.WaitStatus, workerExited bool) {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return status, workerExited
		}
		if pid == worker && worker > 0 {
			status, workerExited = ws, true
		}
	}
}

func exitCode(ws syscall.WaitStatus) int {
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}
