package main

import (
	"context"
	"os"
	"runtime/debug"

	"github.com/lbctl/lbctl/internal/memtrim"
)

// gcPercent is lbctl run's GOGC when the environment sets none. Its heap is
// a few MB and its work comes in bursts, so the collector runs when the heap
// has grown by half rather than doubled: about 1.5 MB less RSS at 100
// services (docs/memory.md), for more frequent cycles over a small heap.
const gcPercent = 50

// setGCPercent applies gcPercent unless GOGC says otherwise.
func setGCPercent() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
}

// releaseStartupMemory waits until start-up is over (every autostart
// program, nginx included, has left STOPPED and STARTING, so the first render
// is live), then hands back to the kernel what only start-up needed: the
// heap it freed and the pages of the binary that package init and first
// runs mapped (package memtrim). Steady-state work faults back in what it
// touches. It gives up when ctx ends first.
func (o *runOptions) releaseStartupMemory(ctx context.Context) {
	for {
		changed := o.sup.Changes()
		if o.sup.StartedUp() {
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
	r, err := memtrim.Release()
	if err != nil {
		o.log.Warn("could not release start-up memory", "err", err)
		return
	}
	o.log.Info("released start-up memory", "rss_before_kb", r.Before>>10, "rss_after_kb", r.After>>10)
}
