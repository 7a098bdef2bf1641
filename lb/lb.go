// Package lb assembles the load balancer: the one place where lbctl's parts
// are joined. Consul health watch → render engine (following the traffic
// splits of lbctl shift) → reload controller → nginx, plus the drain
// publisher (package lbstate), the access-log statistics (package accesslog)
// and the load balancer's own registration (package registrar).
//
// `lbctl run`, `lbctl render`, the reload benchmark and the end-to-end tests
// all build the pipeline here, so a part wired once reaches all of them.
//
//	l, err := lb.New(cfg, lb.Options{Log: log, Metrics: metrics.New(reg), Supervisor: sup})
//	err = l.Run(ctx) // first render (Consul, or the last config on disk) → nginx's gate → follow Consul
package lb

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/lbctl/lbctl/accesslog"
	"github.com/lbctl/lbctl/catalog"
	"github.com/lbctl/lbctl/config"
	"github.com/lbctl/lbctl/internal/consulclient"
	"github.com/lbctl/lbctl/internal/latest"
	"github.com/lbctl/lbctl/internal/listensock"
	"github.com/lbctl/lbctl/lbstate"
	"github.com/lbctl/lbctl/metrics"
	"github.com/lbctl/lbctl/registrar"
	"github.com/lbctl/lbctl/reload"
	"github.com/lbctl/lbctl/render"
	"github.com/lbctl/lbctl/render/consultemplate"
	"github.com/lbctl/lbctl/shift"
	"github.com/lbctl/lbctl/supervisor"
)

// FirstRenderGate is the readiness gate nginx waits for (programs[].wait_for_gates):
// Run opens it once the first render passed nginx -t (or, with Consul down,
// once the last good config is known to be on disk), so nginx never starts on
// an empty or stale upstream list while Consul is reachable.
const FirstRenderGate = "first-render"

// Needed reports whether cfg renders anything, that is whether lbctl run has
// a load balancer to run besides its programs.
func Needed(cfg *config.Config) bool {
	return len(cfg.Services) > 0 || len(cfg.Templates) > 0
}

// Supervisor is what the load balancer uses of lbctl run's supervisor
// (*supervisor.Supervisor) when nginx is one of its programs.
type Supervisor interface {
	StatusOf(name string) (supervisor.Status, error)
	PID(name string) int
	Changes() <-chan struct{}
	OpenGate(name string)
	BeforeStart(name string, hook func() (supervisor.Extras, error))
}

// Options are the load balancer's dependencies; every field may be left zero.
type Options struct {
	// Consul is the client for every Consul request; nil builds one from cfg.Consul.
	Consul *api.Client
	// Log is narrowed per component; nil discards.
	Log *slog.Logger
	// Metrics receive the reload controller's metrics and every failed Consul
	// request (lbctl_consul_errors_total); nil uses a private registry.
	Metrics *metrics.Metrics
	// Supervisor, when set, runs nginx as the program cfg.Nginx.Program: the
	// master pid comes from it, Run opens FirstRenderGate on it, /healthz
	// needs nginx RUNNING and the load balancer registers once nginx runs.
	Supervisor Supervisor
	// MasterPID finds the nginx master when no supervisor runs nginx; nil
	// reads nginx.pid_file (see reload.Options.MasterPID).
	MasterPID func() (int, error)
	// RenderOnly is `lbctl render`: render, validate and reload, nothing
	// else (no drain state published, no statistics, no registration).
	RenderOnly bool
	// OnApplied, if set, is called with every update nginx is confirmed to
	// serve, after its Consul indexes were handed to the drain publisher. It
	// runs while the reload controller holds its lock: it must not block.
	OnApplied func(render.Update)
	// OnPublished, if set, is called after each write of the drain state
	// (the indexes nginx serves), with the write's error.
	OnPublished func(indexes map[catalog.Query]uint64, err error)
	// Resolve turns host names from Consul into addresses; nil is the
	// system resolver, one second per lookup.
	Resolve render.Resolver
	// ConsulMaxBackoff caps the health watch's retry delay after Consul
	// errors (0: the watcher's default, 5s).
	ConsulMaxBackoff time.Duration
	// StatsPoll and StatsPeriod are how often access logs are read and call
	// counts published (0: the collector's defaults).
	StatsPoll, StatsPeriod time.Duration
}

// LB is one load balancer: everything lbctl run does besides supervising.
type LB struct {
	cfg       *config.Config
	opts      Options
	log       *slog.Logger
	client    *api.Client
	m         *metrics.Metrics
	engine    *render.Engine
	reload    *reload.Controller
	publisher *lbstate.Publisher   // nil with RenderOnly
	registrar *registrar.Registrar // nil without a register: section, or with RenderOnly
	id        string
	// sockets are nginx's listening sockets, held by lbctl while the
	// supervisor runs nginx (sockets.go); nil otherwise.
	sockets *listensock.Set
	// live: instance changes are pushed to nginx's Lua balancer
	// (nginx.live_upstreams, and nginx has the Lua module).
	live bool
	// applied holds the newest Consul indexes nginx serves, for the
	// publisher (capacity 1, newest wins): the reload controller hands them
	// over without waiting for Consul.
	applied chan map[catalog.Query]uint64
	// instances hands the health watch's snapshots to the access-log
	// collector (capacity 1, newest wins): one watch for both. nil when no
	// collector runs.
	instances chan catalog.Snapshot
	// rendered is the config the engine renders (services and templates
	// change on Reconfigure); newEngines hands Run an engine built for a new
	// one (capacity 1, newest wins).
	mu         sync.Mutex
	rendered   *config.Config
	newEngines chan *render.Engine

	liveDirOnce sync.Once
	liveDirErr  error
	startOnce   sync.Once
	startErr    error // Start's outcome
}

// New builds the pipeline for cfg (defaults filled, validated); nothing runs
// until Start or Run.
func New(cfg *config.Config, opts Options) (*LB, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Metrics == nil {
		opts.Metrics = metrics.New(metrics.NewRegistry())
	}
	if opts.Resolve == nil {
		opts.Resolve = render.SystemResolver(time.Second)
	}
	l := &LB{cfg: cfg, opts: opts, log: opts.Log.With("component", "lb"), client: opts.Consul, m: opts.Metrics,
		id: cfg.LBID, applied: make(chan map[catalog.Query]uint64, 1), newEngines: make(chan *render.Engine, 1)}
	if l.client == nil {
		c, err := consulclient.New(cfg.Consul)
		if err != nil {
			return nil, err
		}
		l.client = c
	}
	if l.id == "" {
		var err error
		if l.id, err = os.Hostname(); err != nil {
			return nil, fmt.Errorf("lb_id: no host name to default to: %w", err)
		}
	}
	l.reload = reload.New(reload.Options{
		Nginx:        cfg.Nginx,
		MasterPID:    l.masterPID(),
		Wait:         cfg.Wait,
		Metrics:      l.m,
		Log:          opts.Log,
		OnApplied:    l.onApplied,
		Destinations: l.destinations(),
		Live:         livePusher(cfg.Nginx),
	})
	l.live = cfg.Nginx.LiveUpstreams && !l.withoutLuaModule()
	if !opts.RenderOnly && len(accessLogPaths(cfg)) > 0 {
		l.instances = make(chan catalog.Snapshot, 1)
	}
	engine, err := l.newEngine(cfg)
	if err != nil {
		return nil, err
	}
	l.engine, l.rendered = engine, cfg
	l.holdSockets()
	if opts.RenderOnly {
		return l, nil
	}
	l.publisher = lbstate.NewPublisher(l.client, l.id, opts.Log)
	if cfg.Register != nil {
		svc, err := registrar.ServiceFromConfig(*cfg.Register).Complete(registrar.SystemHost())
		if err != nil {
			return nil, fmt.Errorf("register: %w", err)
		}
		l.registrar = registrar.New(l.client, svc, opts.Log)
	}
	return l, nil
}

// newEngine is the render engine: a Consul health watch for the built-in
// services (its errors counted), the splits of lbctl shift, and
// consul-template for the templates.
func (l *LB) newEngine(cfg *config.Config) (*render.Engine, error) {
	if cfg.Nginx.LiveUpstreams && !l.live {
		reloadMode := *cfg
		reloadMode.Nginx.LiveUpstreams = false
		cfg = &reloadMode
	}
	watcher := catalog.NewWatcher(l.client, render.Queries(cfg.Services), l.opts.Log)
	watcher.OnError = func(catalog.Query, error) { l.m.ConsulErrors.Inc() }
	watcher.OnWaiting = func(w catalog.Waiting) {
		l.m.ConsulWaiting.WithLabelValues(metrics.WaitingQueued).Set(float64(w.Queued))
		l.m.ConsulWaiting.WithLabelValues(metrics.WaitingRateLimited).Set(float64(w.RateLimited))
		l.m.ConsulWaiting.WithLabelValues(metrics.WaitingFailing).Set(float64(w.Failing))
		l.m.ConsulWaiting.WithLabelValues(metrics.WaitingUnanswered).Set(float64(w.Unanswered))
		l.m.ConsulConcurrency.Set(float64(w.Concurrency))
	}
	if l.opts.ConsulMaxBackoff > 0 {
		watcher.MaxBackoff = l.opts.ConsulMaxBackoff
	}
	if l.instances != nil {
		watcher.OnSnapshot = func(s catalog.Snapshot) { latest.Send(context.Background(), l.instances, s) }
	}
	var tmpl render.Templates
	if len(cfg.Templates) > 0 {
		ct, err := consultemplate.New(cfg.Templates, cfg.Consul, l.opts.Log)
		if err != nil {
			return nil, err
		}
		tmpl = ct
	}
	engine := render.NewEngine(cfg, watcher, tmpl, l.opts.Resolve, l.opts.Log)
	engine.FollowSplits(shift.NewWatcher(l.client, l.opts.Log))
	return engine, nil
}

// masterPID asks the supervisor when nginx is one of its programs, and
// otherwise leaves it to Options.MasterPID (or nginx.pid_file when nil).
func (l *LB) masterPID() func() (int, error) {
	sup, name := l.opts.Supervisor, l.cfg.Nginx.Program
	if !l.supervisesNginx() {
		return l.opts.MasterPID
	}
	return func() (int, error) {
		if pid := sup.PID(name); pid > 0 {
			return pid, nil
		}
		return 0, fmt.Errorf("program %s: %w", name, reload.ErrNoMaster)
	}
}

// ID is the load balancer's name in Consul KV (lb_id, or the host name).
func (l *LB) ID() string { return l.id }

// Metrics are the metrics the load balancer updates.
func (l *LB) Metrics() *metrics.Metrics { return l.m }

// Controller is the reload controller (old generations, health, a direct Apply).
func (l *LB) Controller() *reload.Controller { return l.reload }

// Once renders every destination once (`lbctl render --once`, `--dry-run`).
// It fails, rather than render "no instances", when Consul does not answer
// before ctx ends.
func (l *LB) Once(ctx context.Context) (render.Update, error) { return l.currentEngine().Once(ctx) }

// Apply validates u with nginx -t, writes the files whose bytes changed and,
// when an nginx master is known, reloads it and confirms (reload.Controller.Apply).
// In live mode it returns once the seed file is written too.
func (l *LB) Apply(ctx context.Context, u render.Update) (reload.Result, error) {
	if err := l.ensureLiveDir(); err != nil {
		return reload.Result{}, err
	}
	defer l.reload.WaitSeed() // the caller may exit next
	return l.reload.Apply(ctx, u)
}

// Healthy is /healthz: nginx running (when supervised), the last reload not
// failed, and Consul not out of reach for longer than the drain state's
// session TTL (lbstate.Publisher.Reachable): past that, drains no longer
// wait for this load balancer, so it must take no more calls.
func (l *LB) Healthy() error {
	if sup := l.opts.Supervisor; sup != nil {
		if st, err := sup.StatusOf(l.cfg.Nginx.Program); err == nil && st.State != supervisor.Running {
			return fmt.Errorf("nginx is %s", st.State)
		}
	}
	if err := l.reload.Healthy(); err != nil {
		return err
	}
	if l.publisher != nil {
		return l.publisher.Reachable()
	}
	return nil
}

// Run renders the first config (Start) unless that was done, opens nginx's
// gate, then until ctx ends: renders and reloads on every Consul change,
// publishes what nginx serves, registers the load balancer once nginx runs
// and collects access-log statistics. It returns nil when ctx ends, and the
// error of a first render that can never succeed (nginx -t rejects it and no
// earlier config exists) or of a part that stopped. Deregistering is left to
// Deregister, which lbctl run calls before it stops nginx.
//
// With RenderOnly (lbctl render) there is no start-up to order: Run follows
// Consul at once, and a rejected render is logged while it waits for the next.
func (l *LB) Run(ctx context.Context) error {
	if !l.opts.RenderOnly {
		if _, err := l.Start(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
	if err := l.ensureLiveDir(); err != nil {
		return err
	}
	defer l.closeSockets()
	if l.opts.Supervisor != nil {
		l.opts.Supervisor.OpenGate(FirstRenderGate)
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	errc := make(chan error, 7)
	run := func(f func(context.Context) error) { wg.Go(func() { errc <- f(ctx) }) }
	updates := make(chan render.Update, 1)
	run(func(ctx context.Context) error { return l.runEngines(ctx, updates) })
	run(func(ctx context.Context) error { return l.reload.Run(ctx, updates) })
	if l.publisher != nil {
		run(l.publisher.Run)
		run(l.publishApplied)
		if c := l.collector(); c != nil {
			run(c.Run)
		}
	}
	if l.registrar != nil {
		run(l.registerWhenNginxRuns)
	}
	if l.live && l.opts.Supervisor != nil {
		run(l.resyncOnNginxRestart)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errc: // a part that returns nil early is done; the others go on
			if err != nil && ctx.Err() == nil {
				return err
			}
		}
	}
}

// collector is the access-log statistics of the services that keep one
// (services[].access_log), or nil.
func (l *LB) collector() *accesslog.Collector {
	if l.instances == nil {
		return nil
	}
	return &accesslog.Collector{Client: l.client, LB: l.id, Paths: accessLogPaths(l.cfg), Instances: l.instances,
		Poll: l.opts.StatsPoll, Period: l.opts.StatsPeriod, Log: l.log}
}

// accessLogPaths are the access logs cfg's services keep, each once.
func accessLogPaths(cfg *config.Config) []string {
	var paths []string
	for _, s := range cfg.Services {
		if s.AccessLog != "" && !slices.Contains(paths, s.AccessLog) {
			paths = append(paths, s.AccessLog)
		}
	}
	return paths
}

// registerWhenNginxRuns registers the load balancer once nginx is RUNNING
// (at once when no supervisor runs nginx).
func (l *LB) registerWhenNginxRuns(ctx context.Context) error {
	for sup := l.opts.Supervisor; sup != nil; {
		changed := sup.Changes()
		st, err := sup.StatusOf(l.cfg.Nginx.Program)
		if err != nil || st.State == supervisor.Running {
			break
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil
		}
	}
	return l.registrar.Run(ctx)
}

// Deregister removes the load balancer's own registration from Consul;
// lbctl run calls it on shutdown before nginx stops, so clients stop picking
// this load balancer first. Failures are logged: shutdown goes on.
func (l *LB) Deregister(ctx context.Context) {
	if l.registrar == nil {
		return
	}
	if err := l.registrar.Deregister(ctx); err != nil {
		l.log.Warn("deregistering the load balancer failed", "err", err)
		return
	}
	l.log.Info("load balancer deregistered", "service_id", l.registrar.Service().ID)
}
