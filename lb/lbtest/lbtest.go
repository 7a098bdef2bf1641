// Package lbtest runs a load balancer (package lb) in front of a test nginx
// (internal/testrig) the way lbctl run starts one, with the test starting
// nginx where lbctl run's supervisor would.
package lbtest

import (
	"context"
	"sync"
	"testing"

	"github.com/lbctl/lbctl/internal/testrig"
	"github.com/lbctl/lbctl/lb"
	"github.com/lbctl/lbctl/reload"
)

// MasterPID is n's master, for lb.Options.MasterPID: reload.ErrNoMaster
// until n is started.
func MasterPID(n *testrig.Nginx) func() (int, error) {
	return func() (int, error) {
		if pid := n.PID(); pid != 0 {
			return pid, nil
		}
		return 0, reload.ErrNoMaster
	}
}

// Run renders the first config (l.Start: nginx is not running yet, so the
// files are only validated and written), starts n on it, then runs l until
// the test ends. It returns the first render's result; a first render that
// fails fails the test, and so does l.Run returning an error.
func Run(t testing.TB, l *lb.LB, n *testrig.Nginx) reload.Result {
	t.Helper()
	return run(t, l, n.Start)
}

// RunOnRunningNginx is Run for an nginx that already serves (lbctl
// restarted beside it): l starts, applies its first render to that nginx,
// and runs until the test ends.
func RunOnRunningNginx(t testing.TB, l *lb.LB) reload.Result {
	t.Helper()
	return run(t, l, func() {})
}

// run starts l, calls beforeRun (which starts nginx, or not), and runs l
// until the test ends.
func run(t testing.TB, l *lb.LB, beforeRun func()) reload.Result {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	res, err := l.Start(ctx)
	if err != nil {
		cancel()
		t.Fatalf("first render: %+v, %v", res, err)
	}
	beforeRun()
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := l.Run(ctx); err != nil {
			t.Errorf("load balancer: %v", err)
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
	return res
}
