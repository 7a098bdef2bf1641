package appctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/lbctl/lbctl/config"
	"github.com/lbctl/lbctl/supervisor"
)

// appName is the supervised app's program name (its output lines are prefixed with it).
const appName = "app"

// appProcess is the app that Run supervises (`lbctl register -- COMMAND ARGS…`), as the
// one program of a supervisor (the same code as lbctl run's programs): its
// own process group, never restarted, stopped with SIGTERM and, after
// stopWait, SIGKILL to the group.
type appProcess struct {
	sup    *supervisor.Supervisor
	cancel context.CancelFunc
	done   chan struct{} // closed once the app has exited and its exit is recorded

	stopOnce sync.Once
	stopErr  error
	mu       sync.Mutex
	exit     *supervisor.Exit
}

// startApp starts argv under a supervisor, its output lines going to stdout
// and stderr.
func startApp(argv []string, stopWait time.Duration, log *slog.Logger, stdout, stderr io.Writer) (*appProcess, error) {
	startSecs, retries, stopWaitSecs := 0.0, 0, stopWait.Seconds()
	prog, err := supervisor.FromConfig(config.Program{
		Name: appName, Command: argv, Autorestart: config.AutorestartFalse,
		StartSecs: &startSecs, StartRetries: &retries, Essential: true, StopWaitSecs: &stopWaitSecs,
	})
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	sup, err := supervisor.New([]supervisor.Program{prog}, supervisor.Options{Logger: log, Stdout: stdout, Stderr: stderr})
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a := &appProcess{sup: sup, cancel: cancel, done: make(chan struct{})}
	go a.supervise(ctx)
	return a, nil
}

// supervise runs the supervisor. It returns when the app exits on its own
// (an essential program: Run reports its exit) or when Stop cancels ctx.
func (a *appProcess) supervise(ctx context.Context) {
	err := a.sup.Run(ctx)
	var ee *supervisor.EssentialError
	if errors.As(err, &ee) {
		a.recordExit(ee.Exit)
	}
	close(a.done)
}

func (a *appProcess) recordExit(e *supervisor.Exit) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.exit == nil {
		a.exit = e
	}
}

// Done is closed when the app has exited.
func (a *appProcess) Done() <-chan struct{} { return a.done }

// Stop sends the app SIGTERM (SIGKILL to its group after stopWait), waits
// for it to exit and ends its supervisor. An app that already exited is left be.
func (a *appProcess) Stop(ctx context.Context) error {
	a.stopOnce.Do(func() {
		select {
		case <-a.done:
			return
		default:
		}
		if err := a.sup.Stop(ctx, appName); err != nil {
			a.stopErr = fmt.Errorf("stop the app: %w", err)
		}
		if st, err := a.sup.StatusOf(appName); err == nil {
			a.recordExit(st.LastExit)
		}
		a.cancel()
		<-a.done
	})
	return a.stopErr
}

// ExitCode is the app's exit code once Done is closed: its own code, 128+N
// when signal N killed it, 127 when it could not be started, 1 when unknown.
func (a *appProcess) ExitCode() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return exitCode(a.exit)
}

// exitCode maps a supervised program's exit to a process exit code (nil: unknown).
func exitCode(e *supervisor.Exit) int {
	switch {
	case e == nil:
		return 1
	case e.Err != "":
		return 127
	case e.Signal != "":
		if sig, err := config.ParseSignal(e.Signal); err == nil {
			return 128 + int(sig)
		}
		return 1
	}
	return e.Code
}

// StartError says why the app could not be started, if that is how it ended.
func (a *appProcess) StartError() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.exit == nil || a.exit.Err == "" {
		return nil
	}
	return fmt.Errorf("start the app: %s", a.exit.Err)
}
