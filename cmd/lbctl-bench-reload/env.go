package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/lbctl/lbctl/internal/testrig"
	"github.com/lbctl/lbctl/internal/view"
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

// appliedAt is when an update was rendered (render.Update.Seen: after the
// blocking query returned and the template ran) and when the reload
// controller had nginx confirm it (reloaded, or pushed and read back).
type appliedAt struct {
	seen, applied time.Time
}

func setUp(ctx context.Context, tb *testrig.ProgramTB, o benchOptions) (*benchEnv, error) {
	if _, err := os.Stat(o.consulTemplate); err != nil {
		return nil, fmt.Errorf("consul-template: %w (run scripts/install-deps.sh)", err)
	}
	env := &benchEnv{consul: testrig.StartConsul(tb)}
	env.backends = [2]*testrig.Greeter{testrig.StartGreeter(tb, "alpha", "v1"), testrig.StartGreeter(tb, "beta", "v2")}
	for _, service := range []string{"greeter", "greeter-live"} {
		if err := env.point(service, env.backends[0]); err != nil {
			return nil, err
		}
	}
	var err error
	args := childArgs{Consul: env.consul.Addr, Service: "greeter", Listen: testrig.LoopbackAddr(testrig.FreePort(tb)), WaitMin: o.waitMin, Verbose: o.verbose}
	if env.lbctl, err = startPipeline(tb, args); err != nil {
		return nil, err
	}
	args.Service, args.Listen, args.LiveWorkers = "greeter-live", testrig.LoopbackAddr(testrig.FreePort(tb)), o.liveWorkers
	if env.live, err = startPipeline(tb, args); err != nil {
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

// watch starts a bare blocking query on service, the one lbctl's watcher
// makes (passing instances, consul/api, through internal/view with no gap
// between requests), and returns a channel that gets the time Consul
// answered with the instance at g. The query for the current index has
// been answered when watch returns; the blocking ones go out from there.
func (e *benchEnv) watch(ctx context.Context, service string, g *testrig.Greeter) <-chan time.Time {
	health := e.consul.Client.Health()
	fetch := func(ctx context.Context, index uint64) ([]*api.ServiceEntry, uint64, error) {
		entries, meta, err := health.Service(service, "", true, (&api.QueryOptions{WaitIndex: index, WaitTime: time.Minute}).WithContext(ctx))
		if err != nil {
			return nil, 0, err
		}
		return entries, meta.LastIndex, nil
	}
	answered := make(chan time.Time, 1)
	_, index, err := fetch(ctx, 0)
	if err != nil {
		close(answered)
		return answered
	}
	v := view.New(fetch, nil)
	v.From, v.MinGap = index, 0
	go func() {
		defer close(answered)
		v.Run(ctx, func(entries []*api.ServiceEntry, _ uint64) error {
			if len(entries) == 1 && entries[0].Service.Port == g.Port {
				answered <- time.Now()
				return view.ErrStop
			}
			return nil
		})
	}()
	return answered
}

// waitAnswer is when a watch's blocking query was answered.
func waitAnswer(answered <-chan time.Time, timeout time.Duration) (time.Time, error) {
	select {
	case at, ok := <-answered:
		if !ok {
			return time.Time{}, errors.New("it failed")
		}
		return at, nil
	case <-time.After(timeout):
		return time.Time{}, fmt.Errorf("no answer within %s", timeout)
	}
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
		if gens := e.lbctl.oldGenerations(); gens != 0 {
			return fmt.Errorf("%d old generations", gens)
		}
		return nil
	})
	time.Sleep(gap) // pacing between rounds, not waiting for an event
}
