package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/lbctl/lbctl/config"
	"github.com/lbctl/lbctl/internal/testrig"
	"github.com/lbctl/lbctl/lb"
	"github.com/lbctl/lbctl/lb/lbtest"
	"github.com/lbctl/lbctl/reload"
	"github.com/lbctl/lbctl/render"
)

// benchEnv is one Consul, two greeter backends, and three nginx: one fed by
// lbctl reloading, one by consul-template, both serving Consul service
// "greeter", and one with the Lua module fed by lbctl in live mode, serving
// service "greeter-live" (the same two backends), so that its rounds are
// Consul writes of their own, measured while the other pipelines are idle.
type benchEnv struct {
	consul   *testrig.Consul
	backends [2]*testrig.Greeter
	lbctl    *pipeline // reload mode, service "greeter"
	live     *pipeline // live upstreams, service "greeter-live"
	ctAddr   string
	ctNginx  *testrig.Nginx
}

// pipeline is one lbctl load balancer built by package lb, and its nginx.
type pipeline struct {
	service string // the Consul service it serves
	addr    string // where its nginx listens
	nginx   *testrig.Nginx
	ctl     *reload.Controller
	// applied is the newest update nginx was confirmed to hold (OnApplied).
	applied atomic.Pointer[appliedAt]
}

// appliedAt is when an update was rendered (render.Update.Seen: after the
// blocking query returned and the template ran) and when the reload
// controller had nginx confirm it (reloaded, or pushed and read back).
type appliedAt struct {
	index         uint64
	seen, applied time.Time
}

func setUp(ctx context.Context, tb *testrig.ProgramTB, o benchOptions) (*benchEnv, error) {
	if _, err := os.Stat(o.consulTemplate); err != nil {
		return nil, fmt.Errorf("consul-template: %w (run scripts/install-deps.sh)", err)
	}
	env := &benchEnv{consul: testrig.StartConsul(tb)}
	env.backends = [2]*testrig.Greeter{testrig.StartGreeter(tb, "alpha", "v1"), testrig.StartGreeter(tb, "beta", "v2")}
	env.lbctl, env.live = &pipeline{service: "greeter"}, &pipeline{service: "greeter-live"}
	for _, p := range []*pipeline{env.lbctl, env.live} {
		if err := env.point(p.service, env.backends[0]); err != nil {
			return nil, err
		}
	}
	log := slog.New(slog.DiscardHandler)
	if o.verbose {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if err := env.lbctl.start(tb, env.consul, log, o.waitMin, 0); err != nil {
		return nil, err
	}
	if err := env.live.start(tb, env.consul, log, o.waitMin, o.liveWorkers); err != nil {
		return nil, err
	}
	if err := env.startConsulTemplate(ctx, tb, o); err != nil {
		return nil, err
	}
	testrig.ExpectInstance(tb, env.lbctl.addr, "alpha", 10*time.Second)
	testrig.ExpectInstance(tb, env.live.addr, "alpha", 10*time.Second)
	testrig.ExpectInstance(tb, env.ctAddr, "alpha", 10*time.Second)
	return env, nil
}

// point re-registers the one instance of service at backend g: one catalog write.
func (e *benchEnv) point(service string, g *testrig.Greeter) error {
	reg := &api.AgentServiceRegistration{ID: service + "-x", Name: service, Address: "127.0.0.1", Port: g.Port}
	if err := e.consul.Client.Agent().ServiceRegister(reg); err != nil {
		return fmt.Errorf("register: %w", err)
	}
	return nil
}

// start runs lbctl's pipeline through the same assembly as `lbctl run`
// (package lb): catalog watch, render engine following splits, reload
// controller with the config's default wait, drain publisher. Only the
// supervisor is missing: nginx is started here once the first render is on
// disk. liveWorkers > 0 turns live upstreams on, with an nginx of that many
// workers loading the Lua module.
func (p *pipeline) start(tb *testrig.ProgramTB, consul *testrig.Consul, log *slog.Logger, waitMin time.Duration, liveWorkers int) error {
	n := testrig.NewNginxWith(tb, testrig.NginxOptions{Lua: liveWorkers > 0, Workers: liveWorkers})
	p.nginx, p.addr = n, testrig.LoopbackAddr(testrig.FreePort(tb))
	cfg := &config.Config{
		LBID:     "lbctl-bench-" + p.service,
		Services: []config.Service{{Name: p.service, Listen: p.addr, Shift: true}},
		Nginx: config.Nginx{Binary: n.Bin, Config: n.MainConf, Prefix: n.Dir, PIDFile: n.PIDFile, ServicesConf: filepath.Join(n.ConfD, "lbctl.conf"),
			LiveUpstreams: liveWorkers > 0, LiveDir: filepath.Join(n.Dir, "live")},
		Wait: config.Wait{Min: waitMin},
	}
	cfg.SetDefaults()
	onApplied := func(u render.Update) {
		p.applied.Store(&appliedAt{index: u.Index, seen: u.Seen, applied: time.Now()})
	}
	l, err := lb.New(cfg, lb.Options{Consul: consul.Client, Log: log.With("pipeline", p.service), OnApplied: onApplied})
	if err != nil {
		return err
	}
	if liveWorkers > 0 && !l.Live() {
		return fmt.Errorf("lbctl live: nginx has no Lua module, live upstreams are off")
	}
	p.ctl = l.Controller()
	lbtest.Run(tb, l, n)
	return nil
}

const ctTemplate = `upstream greeter_ct {
{{- range service "greeter" }}
    server {{ .Address }}:{{ .Port }};
{{- end }}
    keepalive 32;
}
server {
    listen %s http2;
    location / { grpc_pass grpc://greeter_ct; }
}
`

// startConsulTemplate runs consul-template rendering the same kind of config
// into a second nginx, with `nginx -s reload` as the template's command.
func (e *benchEnv) startConsulTemplate(ctx context.Context, tb *testrig.ProgramTB, o benchOptions) error {
	n := testrig.NewNginx(tb)
	e.ctNginx, e.ctAddr = n, testrig.LoopbackAddr(testrig.FreePort(tb))
	tpl := filepath.Join(tb.TempDir(), "greeter.ctmpl")
	if err := os.WriteFile(tpl, []byte(fmt.Sprintf(ctTemplate, e.ctAddr)), 0o644); err != nil {
		return err
	}
	// nginx starts on what consul-template will render, so its first render
	// is identical and runs no command.
	first := strings.Replace(fmt.Sprintf(ctTemplate, e.ctAddr), `{{- range service "greeter" }}
    server {{ .Address }}:{{ .Port }};
{{- end }}`, "\n    server "+e.backends[0].Addr+";", 1)
	dest := n.WriteConf("ct.conf", first)
	n.Start()
	reloadCmd := fmt.Sprintf("%s -p %s -c %s -s reload", n.Bin, n.Dir, n.MainConf)
	cmd := exec.CommandContext(ctx, o.consulTemplate, "-consul-addr", e.consul.Addr, "-log-level", "err",
		"-template", tpl+":"+dest+":"+reloadCmd)
	cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start consul-template: %w", err)
	}
	tb.Cleanup(func() { cmd.Process.Signal(syscall.SIGINT); cmd.Wait() })
	return nil
}

// settle lets the previous round's old nginx workers finish, then paces the
// rounds gap apart. The gap matters: after a reload nginx's master sleeps
// 100 ms before it tells the old workers to quit, and a SIGHUP that arrives
// during that sleep waits for it to end. Rounds closer than that would
// measure nginx's sleep, not the pipelines.
func (e *benchEnv) settle(gap time.Duration) {
	testrig.Poll(2*time.Second, func() error {
		if gens, _ := e.lbctl.ctl.OldGenerations(); gens > 0 {
			return fmt.Errorf("%d old generations", gens)
		}
		return nil
	})
	time.Sleep(gap) // pacing between rounds, not waiting for an event
}
