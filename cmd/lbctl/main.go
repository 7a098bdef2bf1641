// Command lbctl runs gRPC services behind nginx with Consul: it registers
// services, renders nginx config from Consul, reloads nginx safely and
// supervises the container's processes.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/lbctl/lbctl/shift"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	root := newRootCmd()
	err := root.ExecuteContext(ctx)
	stop()
	if msg := errorMessage(err); msg != "" {
		fmt.Fprintln(root.ErrOrStderr(), "lbctl:", msg)
	}
	os.Exit(exitCode(err))
}

// Exit codes. Every code lbctl exits with is decided by exitCode, below; the
// table exitCodes is what `lbctl --help` and README's "Exit codes" list.
const (
	exitFailure     = 1   // any other error
	exitUsage       = 2   // bad flags, arguments or shift steps
	exitRolledBack  = 3   // shift: a gate failed; traffic is back on --from
	exitHeld        = 4   // shift: another shift of the service runs
	exitAborted     = 5   // shift: someone ran lbctl shift --abort
	exitRefused     = 6   // shift: unknown service, or a tag without healthy instances
	exitConfig      = 78  // the config is invalid or unreadable (sysexits' EX_CONFIG)
	exitInterrupted = 130 // shift: Ctrl-C; the last step's split stays
)

// exitCodes is the documented table, in order.
var exitCodes = []struct {
	code    string
	meaning string
}{
	{"0", "success; lbctl run: clean stop after SIGTERM or SIGINT"},
	{"1", "any other error; lbctl run: an essential program failed"},
	{"2", "bad usage: unknown command, wrong arguments or flags, bad shift steps"},
	{"3", "shift: a gate failed and traffic is back on --from"},
	{"4", "shift: another shift of the service runs"},
	{"5", "shift: aborted by someone (lbctl shift --abort)"},
	{"6", "shift: unknown service, or a tag without healthy instances"},
	{"78", "the config file is invalid or cannot be read (EX_CONFIG)"},
	{"130", "shift: interrupted (Ctrl-C); the last step's split stays"},
	{"app's", "lbctl register -- app: the app's own code (128+N if signal N killed it)"},
}

// exitCodeHelp is exitCodes as plain text, for lbctl --help.
func exitCodeHelp() string {
	var b strings.Builder
	b.WriteString("Exit codes:\n")
	for _, c := range exitCodes {
		fmt.Fprintf(&b, "  %-5s  %s\n", c.code, c.meaning)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// sentinelCodes are the exit codes of errors callers branch on.
var sentinelCodes = []struct {
	is   error
	code int
}{
	{shift.ErrBadPlan, exitUsage}, {shift.ErrRolledBack, exitRolledBack}, {shift.ErrHeld, exitHeld},
	{shift.ErrAborted, exitAborted}, {shift.ErrUnknownService, exitRefused}, {shift.ErrNoHealthy, exitRefused},
	{shift.ErrInterrupted, exitInterrupted},
}

// exitError carries a specific exit code (a supervised app's, say, or
// exitUsage from usageErrorf, exitConfig from configError) up to main.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}
func (e *exitError) Unwrap() error { return e.err }

// usageErrorf is an error in how the command was called.
func usageErrorf(format string, args ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format, args...)}
}

// configError is a config that cannot be used (nil stays nil).
func configError(err error) error {
	if err == nil {
		return nil
	}
	return &exitError{code: exitConfig, err: err}
}

// exitCode is the one place exit codes are decided: 0 on success, the code an
// exitError carries, that of a sentinel error, exitFailure for any other.
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	for _, c := range sentinelCodes {
		if errors.Is(err, c.is) {
			return c.code
		}
	}
	return exitFailure
}

// errorMessage is what main prints for err: nothing for success or for an
// exitError that carries only a code (the app's own exit).
func errorMessage(err error) string {
	var ee *exitError
	switch {
	case err == nil:
		return ""
	case errors.As(err, &ee) && ee.err == nil:
		return ""
	case errors.As(err, &ee):
		return ee.err.Error()
	}
	return err.Error()
}
