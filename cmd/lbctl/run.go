package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/lbctl/lbctl/config"
	"github.com/lbctl/lbctl/lb"
	"github.com/lbctl/lbctl/metrics"
	"github.com/lbctl/lbctl/supervisor"
	"github.com/lbctl/lbctl/supervisor/control"
	"github.com/lbctl/lbctl/supervisor/reaper"
)

// runOptions is everything runLB needs; the command fills it from flags
// and config, tests fill it by hand.
type runOptions struct {
	cfg *config.Config
	log *slog.Logger
	sup *supervisor.Supervisor
	// registry collects every metric served on cfg.HTTP.Address.
	registry *metrics.Registry
	// reloadConfig re-reads the config file for SIGHUP; nil ignores SIGHUP.
	reloadConfig func() (*config.Config, error)
	// openGates are the readiness gates something in this run opens; a
	// program waiting for any other gate would never start.
	openGates []string
	// beforeStop, when set, runs once ctx ends and before any program is
	// stopped (deregister from Consul while nginx still serves).
	beforeStop func(context.Context)
	// lb renders, reloads, publishes and registers (package lb); nil when the
	// config renders nothing and lbctl run only supervises.
	lb *lb.LB
}

func newRunCmd(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "run",
		Short: "Run as the container entrypoint: supervise nginx, render, reload, register",
		Long: `Run supervises the configured programs (and those of supervisord_config)
until SIGTERM or SIGINT, then stops them in reverse start order. SIGHUP
re-reads the whole config: added programs start, removed ones stop, changed
ones restart, unchanged ones keep running; services and templates are
rendered, validated and reloaded; any other changed key is logged as needing
a restart. An invalid file is logged and changes nothing. As PID 1 it splits into a
small init that reaps zombies and forwards signals, and the worker.

Exit codes (see lbctl --help): 0 clean stop, 1 an essential program failed
(or another runtime error), 78 the config is invalid.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			if isInit, err := initIfPID1(log); isInit {
				return err
			}
			opts, err := newRunOptions(g, log)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel() // ends runMemory's wait if runLB returns first
			runMemory(ctx, opts.sup, log)
			return runLB(ctx, opts)
		},
	}
}

// initIfPID1 gives lbctl as a container's PID 1 (lbctl run, lbctl register
// -- app) its duties: it splits into a small init that reaps every orphan
// and forwards signals, and the worker, this binary again, which does the
// command's work (package reaper). It reports whether this process is that
// init, and then how it ended: the worker's exit code.
func initIfPID1(log *slog.Logger) (isInit bool, err error) {
	if !reaper.ShouldInit() {
		return false, nil
	}
	if code := reaper.RunInit(log); code != 0 {
		return true, &exitError{code: code}
	}
	return true, nil
}

// newRunOptions loads the config and builds the supervisor for it.
func newRunOptions(g *globalOptions, log *slog.Logger) (*runOptions, error) {
	cfg, err := g.loadConfig()
	if err != nil {
		return nil, configError(err)
	}
	programs, err := loadPrograms(cfg, log)
	if err != nil {
		return nil, configError(err)
	}
	reg := metrics.NewRegistry()
	sup, err := supervisor.New(programs, supervisor.Options{Logger: log, Registerer: reg, Stdout: g.stdout, Stderr: g.stderr})
	if err != nil {
		return nil, configError(err)
	}
	o := &runOptions{
		cfg:          cfg,
		log:          log,
		sup:          sup,
		registry:     reg,
		reloadConfig: g.loadConfig,
	}
	if err := o.addLoadBalancer(); err != nil {
		return nil, configError(err)
	}
	return o, nil
}

// loadPrograms is the config's programs followed by those of its
// supervisord_config file.
func loadPrograms(cfg *config.Config, log *slog.Logger) ([]supervisor.Program, error) {
	cps := slices.Clone(cfg.Programs)
	if cfg.SupervisordConfig != "" {
		more, warnings, err := supervisor.LoadSupervisordINI(cfg.SupervisordConfig)
		for _, w := range warnings {
			log.Warn(w)
		}
		if err != nil {
			return nil, err
		}
		cps = append(cps, more...)
	}
	return supervisor.FromConfigs(cps)
}

// runLB runs everything until ctx ends or an essential program fails: the
// control socket, the metrics listener, signal handling and the supervisor.
func runLB(ctx context.Context, o *runOptions) error {
	if err := checkGates(programsGates(o.cfg), o.openGates); err != nil {
		return configError(err)
	}
	sock, err := control.Listen(o.cfg.Control.Socket, os.FileMode(o.cfg.Control.Mode))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 2)
	servers := 1
	go func() { errc <- sock.Serve(ctx, control.Handler(o.sup, o.log.With("component", "control"))) }()
	if o.cfg.HTTP.Address != "" {
		lis, err := metrics.Listen(o.cfg.HTTP.Address)
		if err != nil {
			cancel()
			<-errc
			return err
		}
		servers++
		go func() { errc <- metrics.Serve(ctx, lis, metrics.Handler(o.registry, o.health()), o.log) }()
	}
	go o.handleSignals(ctx)
	lbErr := make(chan error, 1)
	o.startLoadBalancer(ctx, func(err error) { lbErr <- err; cancel() })
	err = o.sup.Run(o.supervisorContext(ctx))
	cancel()
	select {
	case e := <-lbErr:
		err = errors.Join(err, e)
	default:
	}
	for range servers { // the socket file is gone once they return
		if serr := <-errc; serr != nil {
			o.log.Error("server", "err", serr)
		}
	}
	return err
}

// supervisorContext ends after ctx, once beforeStop has run, so programs
// stop only after that.
func (o *runOptions) supervisorContext(ctx context.Context) context.Context {
	supCtx, stop := context.WithCancel(context.Background())
	go func() {
		<-ctx.Done()
		if o.beforeStop != nil {
			o.beforeStop(supCtx)
		}
		stop()
	}()
	return supCtx
}

// programsGates is every gate some program of cfg waits for.
func programsGates(cfg *config.Config) map[string][]string {
	gates := map[string][]string{}
	for _, p := range cfg.Programs {
		for _, g := range p.WaitForGates {
			gates[g] = append(gates[g], p.Name)
		}
	}
	return gates
}

// checkGates refuses programs that wait for a gate nothing in this run opens.
func checkGates(wanted map[string][]string, open []string) error {
	var errs []error
	for gate, progs := range wanted {
		if !slices.Contains(open, gate) {
			errs = append(errs, fmt.Errorf("program %s waits for gate %q, which nothing in lbctl run opens (open: %v)", progs[0], gate, open))
		}
	}
	return errors.Join(errs...)
}

// handleSignals applies SIGHUP (reload programs) and forwards the signals
// programs asked for. SIGTERM and SIGINT cancel the context in main.
func (o *runOptions) handleSignals(ctx context.Context) {
	sigs := make(chan os.Signal, 8)
	watched := append([]os.Signal{syscall.SIGHUP}, toOSSignals(o.sup.ForwardedSignals())...)
	signal.Notify(sigs, watched...)
	defer signal.Stop(sigs)
	for {
		select {
		case <-ctx.Done():
			return
		case s := <-sigs:
			sig := s.(syscall.Signal)
			if sig == syscall.SIGHUP {
				o.reload(ctx, sigs)
				continue
			}
			o.sup.Forward(ctx, sig)
		}
	}
}

// reload applies the config file as it is now: programs through the
// supervisor, services and templates through the load balancer (rendered,
// validated, reloaded); every other changed key is logged as needing a
// restart. An invalid file is logged and changes nothing. sigs is subscribed
// to any signal the new programs want forwarded.
func (o *runOptions) reload(ctx context.Context, sigs chan<- os.Signal) {
	if o.reloadConfig == nil {
		o.log.Info("SIGHUP: nothing to reload")
		return
	}
	cfg, err := o.reloadConfig()
	if err == nil {
		err = checkGates(programsGates(cfg), o.openGates)
	}
	if err != nil {
		o.log.Error("SIGHUP: config not reloaded, nothing changed", "err", err)
		return
	}
	o.reloadPrograms(ctx, cfg, sigs)
	o.reconfigureLoadBalancer(cfg)
}

func (o *runOptions) reloadPrograms(ctx context.Context, cfg *config.Config, sigs chan<- os.Signal) {
	programs, err := loadPrograms(cfg, o.log)
	if err != nil {
		o.log.Error("SIGHUP: programs not reloaded, keeping the running ones", "err", err)
		return
	}
	if err := o.sup.Apply(ctx, programs); err != nil {
		o.log.Error("SIGHUP: programs not applied", "err", err)
		return
	}
	// Never Notify with an empty list: that means every signal.
	if more := o.sup.ForwardedSignals(); len(more) > 0 && sigs != nil {
		signal.Notify(sigs, toOSSignals(more)...)
	}
	o.log.Info("SIGHUP: programs reloaded", "programs", len(programs))
}

func (o *runOptions) reconfigureLoadBalancer(cfg *config.Config) {
	if o.lb == nil {
		if lb.Needed(cfg) {
			o.log.Warn("SIGHUP: changed, needs a restart", "key", "services")
		}
		return
	}
	restart, err := o.lb.Reconfigure(cfg)
	for _, key := range restart {
		o.log.Warn("SIGHUP: changed, needs a restart", "key", key)
	}
	if err != nil {
		o.log.Error("SIGHUP: load balancer not reconfigured", "err", err)
		return
	}
	o.log.Info("SIGHUP: services and templates applied", "services", len(cfg.Services), "templates", len(cfg.Templates))
}

func toOSSignals(sigs []syscall.Signal) []os.Signal {
	out := make([]os.Signal, len(sigs))
	for i, s := range sigs {
		out[i] = s
	}
	return out
}
