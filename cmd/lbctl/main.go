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
	"syscall"
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

// exitError carries a specific exit code (a supervised app's, say) up to main.
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

// exitCode is the one place exit codes are decided: 0 on success, the code an
// exitError carries, 1 for any other error.
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return 1
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
