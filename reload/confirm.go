package reload

import (
	"context"
	"fmt"
	"syscall"
	"time"
)

// confirmPoll is how often /proc is read while waiting for a reload.
const confirmPoll = time.Millisecond

// reloadAndConfirm sends SIGHUP to the nginx master and waits until nginx has
// switched: new workers (children that were not there before, titled
// "worker process", which nginx sets once a worker has initialized and
// listens) are up, and every worker of the replaced generation is gone or
// titled "worker process is shutting down", which nginx sets as it closes its
// listening sockets. From then on every new connection is accepted by the
// new configuration. It returns the replaced and the new workers.
//
// nginx's master starts the new workers, then sleeps 100 ms before it tells
// the old ones to quit; during that window both generations accept. Unless
// waitForMaster is set, once as many new workers are up as there were old
// ones, lbctl sends the old workers the same SIGQUIT the master is about to
// send, which cuts that window short. The master's own SIGQUIT then finds
// them already shutting down; the listening sockets stay open in the master
// and the new workers, so no connection is refused.
//
// errorLog, when it names nginx's error log, is read while waiting: an
// [emerg] logged after the SIGHUP means the master refused the config.
func reloadAndConfirm(ctx context.Context, master int, waitForMaster bool, errorLog string) (old, fresh []proc, err error) {
	before, err := children(master)
	if err != nil {
		return nil, nil, fmt.Errorf("list nginx workers: %w", err)
	}
	known := map[proc]bool{}
	for _, p := range before {
		known[p] = true
		if roleOf(p) == roleWorker {
			old = append(old, p)
		}
	}
	elog := openErrorLog(errorLog)
	if err := syscall.Kill(master, syscall.SIGHUP); err != nil {
		return nil, nil, fmt.Errorf("signal nginx master %d: %w", master, err)
	}
	tick := time.NewTicker(confirmPoll)
	defer tick.Stop()
	hurried := waitForMaster
	for {
		fresh, err = newWorkers(master, known)
		if err != nil {
			return old, nil, err
		}
		if len(fresh) > 0 && allStopped(old) {
			return old, fresh, nil
		}
		if len(fresh) == 0 {
			if err := elog.refusal(); err != nil {
				return old, nil, err
			}
		}
		if !hurried && len(fresh) >= max(1, len(old)) {
			quit(old)
			hurried = true
			continue
		}
		select {
		case <-ctx.Done():
			return old, fresh, fmt.Errorf("%w: nginx master %d: %d new workers, old generation still accepting after SIGHUP: %v",
				ErrNotConfirmed, master, len(fresh), ctx.Err())
		case <-tick.C:
		}
	}
}

// quit tells workers to finish their connections and exit, as nginx's master does.
func quit(workers []proc) {
	for _, w := range workers {
		if w.alive() {
			syscall.Kill(w.pid, syscall.SIGQUIT)
		}
	}
}

func newWorkers(master int, known map[proc]bool) ([]proc, error) {
	kids, err := children(master)
	if err != nil {
		return nil, fmt.Errorf("list nginx workers: %w", err)
	}
	if len(kids) == 0 {
		if err := syscall.Kill(master, 0); err != nil {
			return nil, fmt.Errorf("nginx master %d: %w", master, err)
		}
	}
	var fresh []proc
	for _, k := range kids {
		if !known[k] && roleOf(k) == roleWorker {
			fresh = append(fresh, k)
		}
	}
	return fresh, nil
}

func allStopped(workers []proc) bool {
	for _, w := range workers {
		if roleOf(w) != roleShutdown && w.alive() {
			return false
		}
	}
	return true
}
