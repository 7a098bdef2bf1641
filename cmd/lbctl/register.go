package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/lbctl/lbctl/appctl"
	"github.com/lbctl/lbctl/config"
	"github.com/lbctl/lbctl/internal/consulclient"
	"github.com/lbctl/lbctl/registrar"
)

// registerOptions holds `lbctl register`'s flags and the dependencies tests replace.
type registerOptions struct {
	g *globalOptions
	// reg is bound to the flags; only flags the user set are applied (see flagAppliers).
	reg      config.Register
	reason   string
	stopWait time.Duration
	// changed reports whether the user set a flag (cmd.Flags().Changed).
	changed func(flag string) bool
	// env is os.LookupEnv.
	env func(string) (string, bool)
	// host answers the hostname and interface addresses.
	host registrar.Host
	// log is the logger; nil builds one from the log flags.
	log *slog.Logger
}

func newRegisterCmd(g *globalOptions) *cobra.Command {
	o := newRegisterOptions(g)
	cmd := &cobra.Command{
		Use:   "register [flags] [-- COMMAND ARGS...]",
		Short: "Register a service with the local Consul agent, optionally running it",
		Long: `Register a service instance with the local Consul agent and keep it registered
(re-registering if the agent loses it) until SIGTERM; then drain: maintenance,
wait for every load balancer to confirm (docs/drain.md), deregister.

With -- COMMAND ARGS..., run the app as a child: register once it accepts TCP
connections on --port; on SIGTERM drain, then send the app SIGTERM, wait for
it, deregister and exit with its code. As PID 1 (the app image's entrypoint)
it splits, as lbctl run does, into a small init that reaps orphans and
forwards signals, and the worker.

Seed-style environment variables are honoured when there is no register:
section in the config: APP_NAME, APP_PORT, TAGS (comma-separated),
HEALTH_CHECK_TYPE, HEALTH_CHECK_ENDPOINT, CONSUL_PORT. Flags win over them.`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			app, err := appArgs(cmd, args)
			if err != nil {
				return err
			}
			o.changed = cmd.Flags().Changed
			if len(app) > 0 { // the app image's entrypoint: PID 1 must reap
				log, err := o.logger()
				if err != nil {
					return err
				}
				if isInit, err := initIfPID1(log); isInit {
					return err
				}
			}
			return runRegister(cmd.Context(), o, app)
		},
	}
	o.bindFlags(cmd.Flags())
	return cmd
}

func newRegisterOptions(g *globalOptions) *registerOptions {
	return &registerOptions{g: g, reg: config.DefaultRegister(), env: os.LookupEnv, host: registrar.SystemHost()}
}

func (o *registerOptions) bindFlags(f *pflag.FlagSet) {
	def := config.DefaultRegister()
	f.StringVar(&o.reg.Name, "name", "", "service name (env APP_NAME)")
	f.StringVar(&o.reg.ID, "id", "", "instance ID (default name-hostname-port)")
	f.StringVar(&o.reg.Address, "address", "", "address to register (default: first non-loopback IPv4)")
	f.IntVar(&o.reg.Port, "port", 0, "port to register (env APP_PORT)")
	f.StringSliceVar(&o.reg.Tags, "tag", nil, "tag, repeatable or comma-separated (env TAGS)")
	f.StringToStringVar(&o.reg.Meta, "meta", nil, "meta key=value, repeatable (version=...)")
	f.IntVar(&o.reg.Weight, "weight", 0, "weight 1-100 (meta weight); 0 leaves it unset")
	f.StringVar(&o.reg.Check.Type, "check", def.Check.Type, "check type: grpc, http, tcp or ttl (env HEALTH_CHECK_TYPE)")
	f.StringVar(&o.reg.Check.GRPCService, "check-grpc-service", "", "service name for the grpc check (env HEALTH_CHECK_ENDPOINT)")
	f.StringVar(&o.reg.Check.HTTPPath, "check-http-path", "/", "path or URL for the http check (env HEALTH_CHECK_ENDPOINT)")
	f.DurationVar(&o.reg.Check.Interval, "check-interval", def.Check.Interval, "check interval")
	f.DurationVar(&o.reg.Check.Timeout, "check-timeout", def.Check.Timeout, "check timeout")
	f.DurationVar(&o.reg.Check.TTL, "check-ttl", def.Check.TTL, "ttl check lifetime (lbctl heartbeats every ttl/3)")
	f.DurationVar(&o.reg.Check.DeregisterCriticalAfter, "deregister-critical-after", 0, "remove the instance after its check is critical this long (Consul's minimum is 1m)")
	f.StringVar(&o.reg.Drain.Mode, "drain", def.Drain.Mode, "on shutdown: maintenance or deregister")
	f.DurationVar(&o.reg.Drain.Timeout, "drain-timeout", def.Drain.Timeout, "longest wait for load balancers to confirm the drain")
	f.StringVar(&o.reason, "reason", "lbctl drain", "maintenance reason shown in Consul")
	f.DurationVar(&o.stopWait, "stop-wait", 10*time.Second, "after the drain, how long the app has to exit after SIGTERM before SIGKILL")
}

// appArgs is the COMMAND ARGS after --; anything else positional is a usage error.
func appArgs(cmd *cobra.Command, args []string) ([]string, error) {
	dash := cmd.ArgsLenAtDash()
	if dash < 0 && len(args) > 0 || dash > 0 {
		return nil, usageErrorf("unexpected arguments %q: put the app's command after --", args)
	}
	return args, nil
}

// runRegister is `lbctl register`: resolve the registration, then hand it
// (and the app, if any) to appctl.Run, which keeps it until ctx ends, then drains.
func runRegister(ctx context.Context, o *registerOptions, app []string) error {
	log, err := o.logger()
	if err != nil {
		return err
	}
	cfg, err := agentConfig(o.g, o.changed("config"), o.env)
	if err != nil {
		return err
	}
	reg, err := o.registration(cfg.Register)
	if err != nil {
		return err
	}
	svc, err := registrar.ServiceFromConfig(reg).Complete(o.host)
	if err != nil {
		return usageErrorf("register: %v", err)
	}
	client, err := consulclient.New(cfg.Consul)
	if err != nil {
		return err
	}
	return registerExit(appctl.Run(ctx, appctl.Options{Client: client, Service: svc, Drain: reg.Drain, Reason: o.reason,
		App: app, StopWait: o.stopWait, Log: log, Stdout: o.g.stdout, Stderr: o.g.stderr}))
}

// registerExit gives an app's exit its exit code: the app's own, and at
// least 1 when something else failed as well.
func registerExit(err error) error {
	var ae *appctl.ExitError
	switch {
	case !errors.As(err, &ae):
		return err
	case ae.Err != nil:
		return &exitError{code: max(ae.Code, 1), err: ae.Err}
	}
	return &exitError{code: ae.Code}
}

func (o *registerOptions) logger() (*slog.Logger, error) {
	if o.log != nil {
		return o.log, nil
	}
	return o.g.logger()
}

// agentConfig is the config register, maint and deregister use: the config
// file when there is one (an app container usually has none; then only the
// environment and flags), with seed 001's CONSUL_PORT standing for
// CONSUL_HTTP_ADDR=127.0.0.1:$CONSUL_PORT.
func agentConfig(g *globalOptions, fileRequired bool, env func(string) (string, bool)) (*config.Config, error) {
	opts := config.Options{Env: withConsulPort(env), ConsulFlags: g.consul}
	cfg, err := config.Load(g.configPath, opts)
	if errors.Is(err, fs.ErrNotExist) && !fileRequired {
		cfg, err = config.Parse("(no config file)", nil, opts)
	}
	return cfg, configError(err)
}

// withConsulPort makes CONSUL_PORT stand in for CONSUL_HTTP_ADDR when that
// is unset or empty: like Consul's own client, an empty variable counts as unset.
func withConsulPort(env func(string) (string, bool)) func(string) (string, bool) {
	return func(key string) (string, bool) {
		v, ok := env(key)
		if key != "CONSUL_HTTP_ADDR" || v != "" {
			return v, ok
		}
		if port, ok := env("CONSUL_PORT"); ok && port != "" {
			return net.JoinHostPort("127.0.0.1", port), true
		}
		return "", false
	}
}

// registration layers, lowest first: the config's register: section (or the
// defaults and the seed environment variables when it has none), then the
// flags the user set. It is validated; a bad value is a usage error.
func (o *registerOptions) registration(fromFile *config.Register) (config.Register, error) {
	r := config.DefaultRegister()
	if fromFile != nil {
		r = *fromFile
	} else if err := applySeedEnv(&r, o.env); err != nil {
		return r, usageErrorf("%v", err)
	}
	for flag, apply := range flagAppliers {
		if o.changed(flag) {
			apply(&r, &o.reg)
		}
	}
	if err := r.Validate(); err != nil {
		return r, usageErrorf("%v", err)
	}
	return r, nil
}

// flagAppliers copy one flag's value from the flag-bound registration.
var flagAppliers = map[string]func(dst, flags *config.Register){
	"name":                      func(d, f *config.Register) { d.Name = f.Name },
	"id":                        func(d, f *config.Register) { d.ID = f.ID },
	"address":                   func(d, f *config.Register) { d.Address = f.Address },
	"port":                      func(d, f *config.Register) { d.Port = f.Port },
	"tag":                       func(d, f *config.Register) { d.Tags = f.Tags },
	"meta":                      func(d, f *config.Register) { d.Meta = f.Meta },
	"weight":                    func(d, f *config.Register) { d.Weight = f.Weight },
	"check":                     func(d, f *config.Register) { d.Check.Type = f.Check.Type },
	"check-grpc-service":        func(d, f *config.Register) { d.Check.GRPCService = f.Check.GRPCService },
	"check-http-path":           func(d, f *config.Register) { d.Check.HTTPPath = f.Check.HTTPPath },
	"check-interval":            func(d, f *config.Register) { d.Check.Interval = f.Check.Interval },
	"check-timeout":             func(d, f *config.Register) { d.Check.Timeout = f.Check.Timeout },
	"check-ttl":                 func(d, f *config.Register) { d.Check.TTL = f.Check.TTL },
	"deregister-critical-after": func(d, f *config.Register) { d.Check.DeregisterCriticalAfter = f.Check.DeregisterCriticalAfter },
	"drain":                     func(d, f *config.Register) { d.Drain.Mode = f.Drain.Mode },
	"drain-timeout":             func(d, f *config.Register) { d.Drain.Timeout = f.Drain.Timeout },
}

// applySeedEnv reads seed 001's registrar variables. Its images register
// without a check unless HEALTH_CHECK_TYPE is set; here they get a tcp check,
// which any listening app passes. HEALTH_CHECK_ENDPOINT is an http path or
// URL when it starts with / or has a scheme, a gRPC health service name when
// it is a plain name, and ignored when it is host:port (the check always
// targets the registered address and port).
func applySeedEnv(r *config.Register, env func(string) (string, bool)) error {
	if v, ok := env("APP_NAME"); ok {
		r.Name = v
		r.Check.Type = "tcp"
	}
	if v, ok := env("APP_PORT"); ok {
		port, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("APP_PORT: want a port number, got %q", v)
		}
		r.Port = port
	}
	if v, ok := env("TAGS"); ok {
		r.Tags = splitTags(v)
	}
	if v, ok := env("HEALTH_CHECK_TYPE"); ok && v != "" {
		r.Check.Type = strings.ToLower(strings.TrimSpace(v))
	}
	if v, ok := env("HEALTH_CHECK_ENDPOINT"); ok && v != "" {
		switch {
		case strings.HasPrefix(v, "/") || strings.Contains(v, "://"):
			r.Check.HTTPPath = v
		case !strings.Contains(v, ":"):
			r.Check.GRPCService = v
		}
	}
	return nil
}

func splitTags(s string) []string {
	var tags []string
	for _, t := range strings.Split(s, ",") {
		if t = strings.TrimSpace(t); t != "" {
			tags = append(tags, t)
		}
	}
	return tags
}
