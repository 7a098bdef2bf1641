package lb

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/lbctl/lbctl/internal/backoff"
	"github.com/lbctl/lbctl/reload"
	"github.com/lbctl/lbctl/render"
)

// Start renders and validates the first config, before nginx starts; nginx
// may start once it returns nil. The start-up policy:
//
//   - Consul answers: the render must pass nginx -t; it is written (and
//     applied, if an nginx master already runs). Rejected with no earlier
//     config on disk: an error, since nginx would have nothing to serve;
//     rejected with one: nginx starts on that, the rejection logged.
//   - Consul does not answer: keep trying (backoff up to 5s), unless every
//     destination already has a file from an earlier run; then nginx starts
//     on that, and Run converges once Consul is back.
//
// The Result is that of the first render's apply (zero when nginx starts on
// the config on disk). Start runs once: later calls, Run's included, return
// the first call's outcome.
func (l *LB) Start(ctx context.Context) (reload.Result, error) {
	var res reload.Result
	l.startOnce.Do(func() {
		res, l.startErr = l.firstRender(ctx)
	})
	return res, l.startErr
}

func (l *LB) firstRender(ctx context.Context) (reload.Result, error) {
	if err := l.ensureLiveDir(); err != nil {
		return reload.Result{}, err
	}
	if f, ok := l.currentEngine().LiveConfig(); ok {
		l.reload.Prevalidate(ctx, []render.File{f})
	}
	retry := backoff.New(100*time.Millisecond, 5*time.Second)
	for {
		octx, cancel := context.WithTimeout(ctx, 5*time.Second)
		u, err := l.currentEngine().Once(octx)
		cancel()
		if err == nil {
			var res reload.Result
			res, err = l.reload.Apply(ctx, u)
			if err == nil || errors.Is(err, reload.ErrNoMaster) {
				l.log.Info("first render applied; starting nginx", "files", len(u.Files))
				return res, nil
			}
			if errors.Is(err, reload.ErrRejected) && l.lastConfigOnDisk() {
				l.log.Error("first render rejected by nginx -t; starting nginx on the last good config", "err", err)
				return reload.Result{}, nil
			}
			if errors.Is(err, reload.ErrRejected) {
				return res, fmt.Errorf("first render: %w", err)
			}
		}
		if ctx.Err() != nil {
			return reload.Result{}, ctx.Err()
		}
		if l.lastConfigOnDisk() {
			l.log.Warn("Consul not answering; starting nginx on the last config written", "err", err)
			return reload.Result{}, nil
		}
		l.log.Warn("waiting for Consul before starting nginx", "err", err)
		if err := retry.Wait(ctx); err != nil {
			return reload.Result{}, err
		}
	}
}

// lastConfigOnDisk reports whether every destination already has a file.
func (l *LB) lastConfigOnDisk() bool {
	paths := l.destinations()
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil {
			return false
		}
	}
	return len(paths) > 0
}

// destinations are the files the render writes.
func (l *LB) destinations() []string {
	paths := []string{}
	if len(l.cfg.Services) > 0 {
		paths = append(paths, l.cfg.Nginx.ServicesConf)
	}
	for _, t := range l.cfg.Templates {
		paths = append(paths, t.Destination)
	}
	return paths
}
