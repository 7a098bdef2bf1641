// Package reload applies renders to nginx: it coalesces bursts of changes,
// skips renders whose bytes are already live, validates candidates with
// `nginx -t` against the full main config without touching live files, swaps
// them in atomically, sends SIGHUP to the nginx master and confirms from
// /proc that a new worker generation took over. See docs/reload.md.
package reload

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lbctl/lbctl/config"
	"github.com/lbctl/lbctl/internal/atomicfile"
	"github.com/lbctl/lbctl/metrics"
	"github.com/lbctl/lbctl/render"
)

// ErrNotConfirmed means nginx was signalled but no new worker generation
// took over in time; the previous files were put back.
var ErrNotConfirmed = errors.New("reload not confirmed")

// Options configure a Controller.
type Options struct {
	// Nginx gives the binary for nginx -t, the main config and prefix to
	// validate against, and the pid file used when MasterPID is nil (zero
	// values: config defaults).
	Nginx config.Nginx
	// MasterPID finds the nginx master to signal (the supervisor's nginx
	// program). nil reads Nginx.PIDFile. Returning an error wrapping
	// ErrNoMaster means nginx is not running: files are written, not signalled.
	MasterPID func() (int, error)
	// Wait coalesces updates in Run (zero values: config defaults).
	Wait config.Wait
	// ConfirmTimeout bounds the wait for a new worker generation (default 10s).
	ConfirmTimeout time.Duration
	// Metrics are updated if set; nil uses a private registry.
	Metrics *metrics.Metrics
	// Log is narrowed with component=reload; nil discards.
	Log *slog.Logger
	// OnApplied is called with every update nginx is confirmed to serve (or
	// that is already live), after the reload. With coalescing it is the
	// newest update of the burst, which is what nginx serves. The drain
	// protocol publishes its Indexes, one per health query.
	//
	// OnApplied runs while Apply holds the controller's lock, so calls come
	// in the order nginx served the updates. It must not block: hand
	// anything slow, a Consul write above all, to another goroutine with
	// newest-wins semantics (package lb hands the Indexes to the drain
	// publisher through a capacity-1 channel, internal/latest).
	OnApplied func(u render.Update)
	// WaitForMaster leaves telling the old workers to quit to the nginx
	// master, which does it 100 ms after starting the new ones. By default
	// lbctl sends them that SIGQUIT itself as soon as the new workers are up
	// (see reloadAndConfirm).
	WaitForMaster bool
	// Destinations are the files updates write. Before the first Run or
	// Apply, the hidden temp files a killed lbctl left next to them (and next
	// to Nginx.Config) are removed; only lbctl's own names are touched
	// (atomicfile.RemoveStale).
	Destinations []string
	// Live pushes updates' live upstreams (render.Update.Live) to nginx's
	// Lua balancer; nil in reload mode. An update whose files are the ones
	// nginx already has is pushed at once, with no coalescing and no reload.
	Live LivePusher
}

// Controller applies renders to nginx, one at a time.
type Controller struct {
	opts     Options
	log      *slog.Logger
	m        *metrics.Metrics
	validate *validator
	pre      *prevalidator
	gens     *generations
	seed     *seedWriter

	mu      sync.Mutex // serializes Apply
	live    liveState
	known   knownFiles // the live files' data, while their stat stays
	cleanup sync.Once  // removeStaleTemps, before anything is staged
	healthy atomic.Pointer[error]
}

// New returns a Controller; nothing runs until Run or Apply.
func New(opts Options) *Controller {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Metrics == nil {
		opts.Metrics = metrics.New(metrics.NewRegistry())
	}
	if opts.ConfirmTimeout <= 0 {
		opts.ConfirmTimeout = 10 * time.Second
	}
	if opts.MasterPID == nil {
		pidFile := opts.Nginx.PIDFile
		opts.MasterPID = func() (int, error) { return PIDFromFile(pidFile) }
	}
	d := config.Config{Nginx: opts.Nginx, Wait: opts.Wait} // zero values: config's defaults
	d.SetDefaults()
	opts.Nginx, opts.Wait = d.Nginx, d.Wait
	log := opts.Log.With("component", "reload")
	v := newValidator(opts.Nginx.Binary, opts.Nginx.Config, opts.Nginx.Prefix)
	return &Controller{
		opts: opts, log: log, m: opts.Metrics, validate: v,
		pre:  &prevalidator{v: v},
		gens: &generations{m: opts.Metrics, log: log},
		seed: newSeedWriter(opts.Nginx.LiveSeed(), log), known: knownFiles{},
	}
}

// Outcome is how one Apply ended.
type Outcome string

// Outcomes, also the values of the reloads metric's outcome label.
const (
	Applied   Outcome = metrics.OutcomeApplied   // nginx confirmed serving the new files
	Unchanged Outcome = metrics.OutcomeUnchanged // bytes already live: nothing done
	Rejected  Outcome = metrics.OutcomeRejected  // nginx -t (or the master, at reload) refused it; live files kept or restored
	TimedOut  Outcome = metrics.OutcomeTimedOut  // signalled, not confirmed; previous files restored
	Failed    Outcome = metrics.OutcomeFailed    // could not write, or signal
	Written   Outcome = metrics.OutcomeWritten   // files swapped; no nginx running to signal
)

// Result describes one Apply.
type Result struct {
	Outcome Outcome
	// Index is the update's Consul index.
	Index uint64
	// Changed lists the live paths whose bytes changed.
	Changed []string
	// Validate, Swap and Confirm are how long each step took; Validate is
	// only the part not already done in the background (Prevalidated).
	Validate, Swap, Confirm time.Duration
	Prevalidated            bool
	// ConfirmedAt is when nginx was confirmed serving the new files.
	ConfirmedAt time.Time
	// OldWorkers and NewWorkers are the pids of the replaced and new generation.
	OldWorkers, NewWorkers []int
	// Live is how the push of the update's live upstreams ended ("" when it
	// has none), and LivePush how long it took, read-back included.
	Live     Outcome
	LivePush time.Duration
}

// Apply takes one update through validate, swap, signal and confirm, now.
// It is what `lbctl render --once` uses; Run uses it after coalescing. The
// error is a *ValidationError (errors.Is ErrRejected), wraps ErrNotConfirmed,
// wraps ErrRefused (the nginx master refused a config nginx -t passed; the
// live files are restored), or says what failed.
func (c *Controller) Apply(ctx context.Context, u render.Update) (Result, error) {
	c.cleanup.Do(c.removeStaleTemps)
	c.mu.Lock()
	defer c.mu.Unlock()
	res, err := c.apply(ctx, u)
	c.m.Reloads.WithLabelValues(string(res.Outcome)).Inc()
	if res.Live != "" {
		c.m.LiveUpdates.WithLabelValues(string(res.Live)).Inc()
	}
	c.record(u, res, err)
	if err == nil {
		c.live.files, c.live.last = u.Files, &u
	}
	if u.Live != nil {
		c.seed.Later(u.Live)
	}
	return res, err
}

// removeStaleTemps removes the temp files a killed lbctl left next to the
// destinations and the main config.
func (c *Controller) removeStaleTemps() {
	for _, p := range append(slices.Clone(c.opts.Destinations), c.opts.Nginx.Config) {
		removed, err := atomicfile.RemoveStale(p)
		if len(removed) > 0 {
			c.log.Info("removed temp files left by an earlier run", "files", removed)
		}
		if err != nil {
			c.log.Warn("stale temp files", "err", err)
		}
	}
}

func (c *Controller) apply(ctx context.Context, u render.Update) (Result, error) {
	res := Result{Index: u.Index}
	changed, previous, err := c.known.changed(u.Files)
	if err != nil {
		res.Outcome = Failed
		return res, err
	}
	for _, f := range changed {
		res.Changed = append(res.Changed, f.Path)
	}
	if len(changed) == 0 {
		res.Outcome = Unchanged
		return c.pushLive(ctx, u, res, true)
	}
	if u.Live != nil {
		// Upstreams the new files add find their peers at once. Not fatal:
		// an nginx without the push socket yet (it ran without live
		// upstreams) loads the seed file written here when it reloads.
		if _, err := c.pushLive(ctx, u, res, false); err != nil {
			c.log.Warn("live upstreams not pushed before the reload; nginx loads them from the seed file", "err", err)
		}
	}
	res, err = c.validateAndSwap(ctx, changed, previous, res)
	if res.Outcome != Applied || u.Live == nil {
		return res, err
	}
	return c.pushLive(ctx, u, res, true)
}

// pushLive pushes u's live upstreams, if any, into res.
func (c *Controller) pushLive(ctx context.Context, u render.Update, res Result, prune bool) (Result, error) {
	if u.Live == nil {
		return res, nil
	}
	if c.opts.Live == nil {
		res.Live = Failed
		return res, errors.New("update has live upstreams but the controller has no pusher (a wiring bug)")
	}
	t := time.Now()
	var err error
	res.Live, err = c.applyLive(ctx, u.Live, prune)
	res.LivePush = time.Since(t)
	return res, err
}

// validateAndSwap takes changed files through nginx -t, swaps them in,
// reloads nginx and confirms; on failure the previous files are restored.
func (c *Controller) validateAndSwap(ctx context.Context, changed []render.File, previous []prior, res Result) (Result, error) {
	t := time.Now()
	err, st, pre := c.pre.take(ctx, changed)
	if !pre {
		err = c.validate.validate(ctx, changed)
	}
	res.Validate, res.Prevalidated = time.Since(t), pre
	if err != nil {
		res.Outcome = Rejected
		if !errors.Is(err, ErrRejected) {
			res.Outcome = Failed
		}
		return res, err
	}
	t = time.Now()
	if st == nil {
		if st, err = stage(changed); err != nil {
			res.Outcome = Failed
			return res, err
		}
	}
	if err := commit(st); err != nil {
		res.Outcome = Failed
		return res, errors.Join(err, restore(previous))
	}
	res.Swap = time.Since(t)
	res, err = c.signal(ctx, res, previous)
	if serr := syncDirs(st); serr != nil {
		c.log.Warn("renamed files may not survive a crash", "err", serr)
	}
	return res, err
}

// signal reloads nginx with the swapped-in files and confirms it.
func (c *Controller) signal(ctx context.Context, res Result, previous []prior) (Result, error) {
	master, err := c.opts.MasterPID()
	if errors.Is(err, ErrNoMaster) {
		res.Outcome = Written
		return res, nil
	}
	if err != nil {
		res.Outcome = Failed
		return res, errors.Join(fmt.Errorf("find nginx master: %w", err), restore(previous))
	}
	t := time.Now()
	cctx, cancel := context.WithTimeout(ctx, c.opts.ConfirmTimeout)
	defer cancel()
	old, fresh, err := reloadAndConfirm(cctx, master, c.opts.WaitForMaster, c.opts.Nginx.ErrorLog)
	res.ConfirmedAt = time.Now()
	res.Confirm = res.ConfirmedAt.Sub(t)
	res.OldWorkers, res.NewWorkers = pids(old), pids(fresh)
	if err != nil {
		res.Outcome = outcomeOf(err)
		return res, errors.Join(err, restore(previous))
	}
	c.gens.add(old, time.Now())
	res.Outcome = Applied
	return res, nil
}

func outcomeOf(err error) Outcome {
	switch {
	case errors.Is(err, ErrRefused):
		return Rejected
	case errors.Is(err, ErrNotConfirmed):
		return TimedOut
	}
	return Failed
}

// record logs one line per apply and updates metrics and health.
func (c *Controller) record(u render.Update, res Result, err error) {
	attrs := []any{"outcome", res.Outcome, "index", u.Index, "files", res.Changed}
	if res.Live != "" && c.recordLive(u, res, err) {
		return
	}
	switch res.Outcome {
	case Unchanged:
		c.log.Debug("render unchanged; nothing to reload", attrs...)
		c.notifyApplied(u)
		return
	case Rejected:
		c.countRejection(err)
		c.log.Error("render rejected; nginx keeps the last good config", append(attrs, rejectionAttrs(err)...)...)
		return
	case Failed, TimedOut:
		unhealthy := fmt.Errorf("last reload %s: %w", res.Outcome, err)
		c.healthy.Store(&unhealthy)
		c.log.Error("reload failed; nginx keeps the config it had", append(attrs, "err", err)...)
		return
	}
	c.healthy.Store(nil)
	if res.Outcome == Applied {
		c.m.LastReload.SetToCurrentTime()
		if !u.Seen.IsZero() {
			c.m.ChangeToServing.Observe(res.ConfirmedAt.Sub(u.Seen).Seconds())
		}
	}
	msg := "nginx reloaded"
	if res.Outcome == Written {
		msg = "files written; no nginx running to reload"
	}
	gens, workers := c.gens.sweep()
	c.log.Info(msg, append(attrs, "changes", u.Changes, "validate", res.Validate, "prevalidated", res.Prevalidated, "swap", res.Swap,
		"confirm", res.Confirm, "old_workers", res.OldWorkers, "new_workers", res.NewWorkers,
		"old_generations_alive", gens, "old_workers_alive", workers)...)
	c.notifyApplied(u)
}

// recordLive logs and counts the live upstreams part of an apply and says
// whether that was all there was to record: a failed push (whatever the
// files did, nginx does not hold the update), or a push with no reload.
func (c *Controller) recordLive(u render.Update, res Result, err error) bool {
	attrs := []any{"outcome", res.Live, "index", u.Index, "push", res.LivePush}
	if err != nil && (res.Outcome == Unchanged || res.Outcome == Applied) {
		unhealthy := fmt.Errorf("last live upstreams push %s: %w", res.Live, err)
		c.healthy.Store(&unhealthy)
		c.log.Error("live upstreams not applied; nginx keeps the instances it had", append(attrs, "err", err)...)
		return true
	}
	if res.Live == Applied && !u.Seen.IsZero() {
		c.m.ChangeToLive.Observe(time.Since(u.Seen).Seconds())
	}
	if res.Outcome != Unchanged || res.Live != Applied {
		return false // the reload's line tells the rest
	}
	c.healthy.Store(nil)
	c.log.Info("live upstreams applied; no reload", append(attrs, "changes", u.Changes)...)
	c.notifyApplied(u)
	return true
}

func (c *Controller) notifyApplied(u render.Update) {
	if c.opts.OnApplied != nil {
		c.opts.OnApplied(u)
	}
}

func (c *Controller) countRejection(err error) {
	source := "unknown"
	var ve *ValidationError
	if errors.As(err, &ve) && ve.Source != "" {
		source = ve.Source
	}
	if errors.Is(err, ErrRefused) {
		source = "nginx-reload"
	}
	c.m.ValidationFailures.WithLabelValues(source).Inc()
}

func rejectionAttrs(err error) []any {
	var ve *ValidationError
	if !errors.As(err, &ve) {
		return []any{"err", err}
	}
	return []any{"template", ve.Source, "path", ve.Path, "line", ve.Line, "nginx", ve.Output}
}

// Healthy is nil unless the last reload attempt failed or was not confirmed
// (a rejected render is not unhealthy: nginx serves the last good config).
// It never waits for a reload in progress.
func (c *Controller) Healthy() error {
	if err := c.healthy.Load(); err != nil {
		return *err
	}
	return nil
}

// OldGenerations reports how many old worker generations, and workers, are alive.
func (c *Controller) OldGenerations() (gens, workers int) { return c.gens.sweep() }

func pids(ps []proc) []int {
	out := make([]int, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.pid)
	}
	return out
}
