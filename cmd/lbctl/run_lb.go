package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/lbctl/lbctl/accesslog"
	"github.com/lbctl/lbctl/config"
	"github.com/lbctl/lbctl/internal/backoff"
	"github.com/lbctl/lbctl/lbstate"
	"github.com/lbctl/lbctl/metrics"
	"github.com/lbctl/lbctl/registrar"
	"github.com/lbctl/lbctl/reload"
	"github.com/lbctl/lbctl/render"
	"github.com/lbctl/lbctl/supervisor"
)

// firstRenderGate is the readiness gate nginx waits for: lbctl opens it once
// the first render passed nginx -t (or, with Consul down, once it knows the
// last good config is on disk), so nginx never starts on an empty or stale
// upstream list while Consul is reachable.
const firstRenderGate = "first-render"

// loadBalancer is everything lbctl run does besides supervising: render,
// reload, publish what nginx serves (the drain protocol), register the load
// balancer itself, and collect call statistics from nginx's access logs.
type loadBalancer struct {
	cfg       *config.Config
	log       *slog.Logger
	sup       *supervisor.Supervisor
	client    *api.Client
	engine    *render.Engine
	reload    *reload.Controller
	publisher *lbstate.Publisher
	registrar *registrar.Registrar // nil without a register: section
	id        string
}

// wantsLoadBalancer is true when the config has anything to render.
func wantsLoadBalancer(cfg *config.Config) bool {
	return len(cfg.Services) > 0 || len(cfg.Templates) > 0
}

func newLoadBalancer(cfg *config.Config, log *slog.Logger, sup *supervisor.Supervisor, reg *metrics.Registry) (*loadBalancer, error) {
	engine, client, err := renderEngine(cfg, log)
	if err != nil {
		return nil, err
	}
	lb := &loadBalancer{cfg: cfg, log: log.With("component", "lb"), sup: sup, client: client, engine: engine, id: cfg.LBID}
	if lb.id == "" {
		if lb.id, err = os.Hostname(); err != nil {
			return nil, fmt.Errorf("lb_id: no host name to default to: %w", err)
		}
	}
	lb.publisher = lbstate.NewPublisher(client, lb.id, log)
	lb.reload = reload.New(reload.Options{
		Nginx:     cfg.Nginx,
		MasterPID: lb.nginxMasterPID(),
		Wait:      cfg.Wait,
		Metrics:   metrics.New(reg),
		Log:       log,
		OnApplied: lb.publish,
	})
	if cfg.Register != nil {
		svc, err := registrar.ServiceFromConfig(*cfg.Register).Complete(registrar.SystemHost())
		if err != nil {
			return nil, fmt.Errorf("register: %w", err)
		}
		lb.registrar = registrar.New(client, svc, log)
	}
	return lb, nil
}

// nginxMasterPID asks the supervisor when nginx is one of its programs, and
// leaves it to nginx.pid_file (nil) when nginx runs elsewhere.
func (lb *loadBalancer) nginxMasterPID() func() (int, error) {
	if _, err := lb.sup.StatusOf(lb.cfg.Nginx.Program); err != nil {
		return nil
	}
	return func() (int, error) {
		if pid := lb.sup.PID(lb.cfg.Nginx.Program); pid > 0 {
			return pid, nil
		}
		return 0, fmt.Errorf("program %s: %w", lb.cfg.Nginx.Program, reload.ErrNoMaster)
	}
}

// publish tells waiting drains which Consul indexes nginx now serves.
func (lb *loadBalancer) publish(u render.Update) {
	if len(u.Indexes) == 0 {
		return
	}
	if err := lb.publisher.Publish(context.Background(), u.Indexes); err != nil {
		lb.log.Warn("publishing the applied Consul indexes failed; will retry", "err", err)
	}
}

// healthy is /healthz: nginx running and the last reload not failed.
func (lb *loadBalancer) healthy() error {
	if st, err := lb.sup.StatusOf(lb.cfg.Nginx.Program); err == nil && st.State.String() != "RUNNING" {
		return fmt.Errorf("nginx is %s", st.State)
	}
	return lb.reload.Healthy()
}

// firstRender renders and validates the first config before nginx starts.
// With Consul unreachable it keeps trying, unless a config from an earlier
// run is on disk: then nginx starts on that, and Run converges later.
func (lb *loadBalancer) firstRender(ctx context.Context) error {
	retry := backoff.New(100*time.Millisecond, 5*time.Second)
	for {
		octx, cancel := context.WithTimeout(ctx, 5*time.Second)
		u, err := lb.engine.Once(octx)
		cancel()
		if err == nil {
			_, err = lb.reload.Apply(ctx, u)
			if err == nil || errors.Is(err, reload.ErrNoMaster) {
				lb.log.Info("first render applied; starting nginx", "files", len(u.Files))
				return nil
			}
			if errors.Is(err, reload.ErrRejected) && lb.lastConfigOnDisk() {
				lb.log.Error("first render rejected by nginx -t; starting nginx on the last good config", "err", err)
				return nil
			}
			if errors.Is(err, reload.ErrRejected) {
				return fmt.Errorf("first render: %w", err)
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if lb.lastConfigOnDisk() {
			lb.log.Warn("Consul not answering; starting nginx on the last config written", "err", err)
			return nil
		}
		lb.log.Warn("waiting for Consul before starting nginx", "err", err)
		if err := retry.Wait(ctx); err != nil {
			return err
		}
	}
}

// lastConfigOnDisk reports whether every destination already has a file.
func (lb *loadBalancer) lastConfigOnDisk() bool {
	paths := []string{}
	if len(lb.cfg.Services) > 0 {
		paths = append(paths, lb.cfg.Nginx.ServicesConf)
	}
	for _, t := range lb.cfg.Templates {
		paths = append(paths, t.Destination)
	}
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil {
			return false
		}
	}
	return len(paths) > 0
}

// run renders and reloads on every Consul change, publishes what nginx
// serves, registers the load balancer once nginx runs and collects access-log
// statistics, until ctx ends. Deregistering is left to deregister, which lbctl
// run calls before it stops nginx.
func (lb *loadBalancer) run(ctx context.Context) error {
	updates := make(chan render.Update, 1)
	errc := make(chan error, 5)
	go func() { errc <- lb.engine.Run(ctx, updates) }()
	go func() { errc <- lb.reload.Run(ctx, updates) }()
	go func() { errc <- lb.publisher.Run(ctx) }()
	if paths := lb.accessLogs(); len(paths) > 0 {
		c := &accesslog.Collector{Client: lb.client, LB: lb.id, Paths: paths, Queries: render.Queries(lb.cfg.Services), Log: lb.log}
		go func() { errc <- c.Run(ctx) }()
	}
	if lb.registrar != nil {
		go func() { errc <- lb.registerWhenNginxRuns(ctx) }()
	}
	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
}

func (lb *loadBalancer) accessLogs() []string {
	var paths []string
	for _, s := range lb.cfg.Services {
		if s.AccessLog != "" && !slices.Contains(paths, s.AccessLog) {
			paths = append(paths, s.AccessLog)
		}
	}
	return paths
}

// registerWhenNginxRuns registers the load balancer once nginx is RUNNING.
func (lb *loadBalancer) registerWhenNginxRuns(ctx context.Context) error {
	for {
		changed := lb.sup.Changes()
		st, err := lb.sup.StatusOf(lb.cfg.Nginx.Program)
		if err != nil || st.State.String() == "RUNNING" {
			break
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil
		}
	}
	return lb.registrar.Run(ctx)
}

// deregister removes the load balancer from Consul; lbctl run calls it on
// shutdown before nginx stops, so clients stop picking this load balancer first.
func (lb *loadBalancer) deregister(ctx context.Context) {
	if lb.registrar == nil {
		return
	}
	if err := lb.registrar.Deregister(ctx); err != nil {
		lb.log.Warn("deregistering the load balancer failed", "err", err)
		return
	}
	lb.log.Info("load balancer deregistered", "service_id", lb.registrar.Service().ID)
}

// addLoadBalancer sets up the load-balancer side of lbctl run when the config
// renders anything: nginx's first-render gate is then opened by lbctl, and
// the load balancer is deregistered before any program is stopped.
func (o *runOptions) addLoadBalancer() error {
	if !wantsLoadBalancer(o.cfg) {
		return nil
	}
	lb, err := newLoadBalancer(o.cfg, o.log, o.sup, o.registry)
	if err != nil {
		return err
	}
	o.lb = lb
	o.openGates = append(o.openGates, firstRenderGate)
	o.beforeStop = func(ctx context.Context) { lb.deregister(ctx) }
	return nil
}

// startLoadBalancer renders the first config, opens nginx's gate and then
// follows Consul until ctx ends. A first render that can never succeed (nginx
// -t rejects it and no earlier config exists) ends lbctl run through stop.
func (o *runOptions) startLoadBalancer(ctx context.Context, stop func(error)) {
	if o.lb == nil {
		return
	}
	go func() {
		if err := o.lb.firstRender(ctx); err != nil {
			if ctx.Err() == nil {
				stop(err)
			}
			return
		}
		o.sup.OpenGate(firstRenderGate)
		if err := o.lb.run(ctx); err != nil {
			stop(err)
		}
	}()
}

// health is /healthz: the load balancer's when there is one.
func (o *runOptions) health() func() error {
	if o.lb == nil {
		return nil
	}
	return o.lb.healthy
}
