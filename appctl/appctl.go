// Package appctl runs the lifecycle of one instance that `lbctl register
// [-- COMMAND ARGS...]` keeps in Consul (docs/register.md, docs/drain.md):
// with an app, start it as a supervised child and register once it accepts
// TCP connections; keep the registration alive; when the context ends,
// drain (take the instance out of service and wait for every load balancer
// to confirm), stop the app, deregister. An app that exits on its own is
// deregistered and its exit code returned.
package appctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/lbctl/lbctl/config"
	"github.com/lbctl/lbctl/internal/backoff"
	"github.com/lbctl/lbctl/lbstate"
	"github.com/lbctl/lbctl/registrar"
)

// Options are what Run needs: the registration, the drain settings, the app.
type Options struct {
	// Client talks to the local Consul agent.
	Client *api.Client
	// Service is the instance to register, completed (registrar.Service.Complete).
	Service registrar.Service
	// Drain is how the instance leaves service on shutdown (maintenance or
	// deregister) and how long load balancers have to confirm it.
	Drain config.RegisterDrain
	// Reason is the maintenance reason shown in Consul.
	Reason string
	// App is the app's command and arguments; empty: register only.
	App []string
	// StopWait is how long the app has to exit after SIGTERM before SIGKILL.
	StopWait time.Duration
	// Log is the logger (nil discards).
	Log *slog.Logger
	// Stdout and Stderr get the app's output lines (nil: the supervisor's
	// default, os.Stdout and os.Stderr).
	Stdout, Stderr io.Writer
}

// ExitError is how Run ends when the app exited with a non-zero code, or
// when something else failed while an app ran.
type ExitError struct {
	// Code is the app's exit code: its own, 128+N when signal N killed it,
	// 127 when it could not be started, 1 when unknown. It can be 0 when
	// Err is set (the app exited cleanly, the registration failed).
	Code int
	// Err is what failed besides the app's exit, if anything did.
	Err error
}

func (e *ExitError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("app exited with code %d", e.Code)
	}
	return e.Err.Error()
}

func (e *ExitError) Unwrap() error { return e.Err }

// Run registers o.Service (once the app listens, with an app) and keeps it
// registered until ctx ends; then it drains, stops the app, deregisters and
// returns. Without an app, the error is the registrar's or the
// deregistration's. With one, it is nil when the app exited 0 and nothing
// failed, an *ExitError otherwise, or the error that kept the app from
// being started under a supervisor.
func Run(ctx context.Context, o Options) error {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	s := &session{Options: o, r: registrar.New(o.Client, o.Service, o.Log)}
	if len(o.App) == 0 {
		return s.keepRegistered(ctx)
	}
	return s.superviseApp(ctx)
}

// session is one Run: its options and the registrar.
type session struct {
	Options
	r *registrar.Registrar
}

// stopGrace bounds the last steps of a shutdown that run after ctx ended
// (deregistering), besides the drain's own timeout.
const stopGrace = 10 * time.Second

// keepRegistered registers and keeps the registration until ctx ends, then drains and deregisters.
func (s *session) keepRegistered(ctx context.Context) error {
	if err := s.r.Run(ctx); err != nil {
		return err
	}
	stopCtx := context.WithoutCancel(ctx)
	s.drainNow(stopCtx)
	return s.deregister(stopCtx)
}

// superviseApp runs the app, registers it once it listens, and when ctx ends
// drains, stops the app, waits for it, deregisters and returns its code.
// An app that exits on its own is deregistered and its code returned.
func (s *session) superviseApp(ctx context.Context) error {
	app, err := startApp(s.App, s.StopWait, s.Log, s.Stdout, s.Stderr)
	if err != nil {
		return err
	}
	if s.r.Service().Check.Type == "ttl" {
		s.r.Healthy = s.appListening // heartbeats pass only while the app accepts connections
	}
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	runDone := make(chan error, 1)
	go func() { runDone <- s.registerWhenListening(runCtx, app) }()
	var runErr error
	select {
	case <-app.Done():
		stopRun()
		runErr = <-runDone
		s.Log.Warn("app exited on its own", "code", app.ExitCode())
	case runErr = <-runDone: // ctx ended, or the app exited before listening
	case <-ctx.Done():
		runErr = <-runDone
	}
	stopRun()
	stopCtx := context.WithoutCancel(ctx)
	registered := isClosed(s.r.Registered())
	if registered && !isClosed(app.Done()) {
		s.drainNow(stopCtx)
	}
	s.stopApp(stopCtx, app)
	if registered {
		if err := s.deregister(stopCtx); err != nil {
			s.Log.Error("deregistering failed", "err", err)
		}
	}
	code, err := app.ExitCode(), errors.Join(runErr, app.StartError())
	if code == 0 && err == nil {
		return nil
	}
	return &ExitError{Code: code, Err: err}
}

// registerWhenListening runs the registrar once the app accepts TCP
// connections; nil at once when the app exits or ctx ends first.
func (s *session) registerWhenListening(ctx context.Context, app *appProcess) error {
	if !s.waitListening(ctx, app) {
		return nil
	}
	return s.r.Run(ctx)
}

// waitListening polls a TCP connection to the service's port until the app
// accepts one; false when ctx ends or the app exits first.
func (s *session) waitListening(ctx context.Context, app *appProcess) bool {
	b := backoff.New(20*time.Millisecond, 500*time.Millisecond)
	for {
		if s.appListening(ctx) == nil {
			return true
		}
		select {
		case <-app.Done():
			return false
		default:
		}
		if b.Wait(ctx) != nil {
			return false
		}
	}
}

// appListening connects to the registered address and port once.
func (s *session) appListening(ctx context.Context) error {
	svc := s.r.Service()
	d := net.Dialer{Timeout: time.Second}
	conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(svc.Address, strconv.Itoa(svc.Port)))
	if err != nil {
		return fmt.Errorf("app not accepting connections: %w", err)
	}
	return conn.Close()
}

// stopApp sends the app SIGTERM (SIGKILL after StopWait) and waits for it.
func (s *session) stopApp(ctx context.Context, app *appProcess) {
	if err := app.Stop(ctx); err != nil {
		s.Log.Error("stopping the app failed", "err", err)
	}
	s.Log.Info("app exited", "code", app.ExitCode())
}

// drainNow runs the drain; its outcome is logged, and shutdown goes on whatever it was.
func (s *session) drainNow(ctx context.Context) {
	_, err := s.r.Drain(ctx, registrar.DrainOptions{
		Mode: s.Drain.Mode, Reason: s.Reason, Timeout: s.Drain.Timeout,
		Waiter: lbstate.NewWaiter(s.Client, s.Log),
	})
	if err != nil {
		s.Log.Warn("drain incomplete; stopping anyway", "err", err)
	}
}

func (s *session) deregister(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, stopGrace)
	defer cancel()
	if err := s.r.Deregister(ctx); err != nil {
		return err
	}
	s.Log.Info("deregistered")
	return nil
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
