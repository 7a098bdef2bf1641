package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"runtime/debug"

	"github.com/lbctl/lbctl/internal/procmem"
	"github.com/lbctl/lbctl/supervisor"
)

// gcPercent is lbctl run's GOGC when the environment sets none. Its heap is
// a few MB and its work comes in bursts, so the collector runs when the heap
// has grown by half rather than doubled: less anonymous memory at 100
// services (docs/memory.md), for more frequent cycles over a small heap.
const gcPercent = 50

// runMemory is the one place lbctl run's memory is decided, by the command
// (not by runLB, nor packages lb and supervisor, which tests and benches
// drive too): GOGC=50 unless the environment sets GOGC, and once start-up is
// over, the heap start-up freed goes back to the kernel.
//
// The binary's own pages are left alone. They are clean file-backed pages the
// kernel reclaims when it needs to, and in a position-independent executable
// some "read-only" ones hold the relocations the loader wrote (RELRO):
// discarding those crashed lbctl.
func runMemory(ctx context.Context, sup *supervisor.Supervisor, log *slog.Logger) {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	go releaseStartupMemory(ctx, sup, log)
}

// releaseStartupMemory waits until start-up is over (every autostart
// program, nginx included, has left STOPPED and STARTING, so the first render
// is live), then returns to the kernel the heap start-up used and freed
// (debug.FreeOSMemory), and logs the process's memory before and after. It
// gives up when ctx ends first.
func releaseStartupMemory(ctx context.Context, sup *supervisor.Supervisor, log *slog.Logger) {
	for {
		changed := sup.Changes()
		if sup.StartedUp() {
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
	before, err := procmem.Self()
	debug.FreeOSMemory()
	after, err2 := procmem.Self()
	if err := errors.Join(err, err2); err != nil {
		log.Warn("released start-up memory; could not read how much", "err", err)
		return
	}
	log.Info("released start-up memory",
		"anon_before_kb", before.Anonymous, "anon_after_kb", after.Anonymous,
		"pss_before_kb", before.PSS, "pss_after_kb", after.PSS,
		"rss_before_kb", before.RSS, "rss_after_kb", after.RSS)
}
