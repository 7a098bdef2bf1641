// Package demo runs lbctl's local demo stack on loopback, no Docker needed:
// a Consul agent, `lbctl run` supervising nginx, greeter instances run by
// `lbctl register --`, and clients calling through the load balancer and
// straight from Consul (consul:// resolver). Then a blue/green switch under
// load. It prints what happens and returns the figures, which the end-to-end
// test asserts.
package demo

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"
)

// Options say where the binaries are and where the demo may write.
type Options struct {
	LBCTL, Greeter, Consul, Nginx string // binaries
	Dir                           string // work directory (configs, logs)
	Calls                         int    // calls per path in the first phase
	// SwitchLoad is how many concurrent clients call through the load
	// balancer during the blue/green switch.
	SwitchLoad int
	Out        io.Writer
}

// Report is what the demo measured.
type Report struct {
	LBAddr, ConsulAddr string
	// ThroughLB and ViaResolver count who answered the first phase's calls.
	ThroughLB, ViaResolver Tally
	// Switch is the blue/green switch under load.
	Switch SwitchReport
}

// Tally counts calls by answering instance.
type Tally struct {
	Calls, Failed int
	ByInstance    map[string]int
}

// SwitchReport is the blue/green switch: blues drained while calls flowed.
type SwitchReport struct {
	Calls, Failed int64
	// Before, During and After count answers by version: before the greens
	// started; from then until the load stopped (greens joining, blues
	// draining); and calls started after the blues had exited.
	Before, During, After map[string]int64
	// Converge is from SIGTERM to the blues until every blue had exited
	// (drained, finished its calls, deregistered).
	Converge time.Duration
}

// stack is everything the demo started, stopped in reverse order.
type stack struct {
	opts       Options
	procs      []*proc
	consulAddr string
	client     *api.Client
	lbAddr     string
}

func (s *stack) say(format string, args ...any) {
	fmt.Fprintf(s.opts.Out, "demo: "+format+"\n", args...)
}

func (s *stack) stopAll() {
	for i := len(s.procs) - 1; i >= 0; i-- {
		s.procs[i].stop(syscall.SIGTERM, 15*time.Second)
	}
}

// Run starts the stack, runs both phases, stops everything and reports.
func Run(ctx context.Context, opts Options) (Report, error) {
	s := &stack{opts: opts}
	defer s.stopAll()
	if err := s.startConsul(); err != nil {
		return Report{}, err
	}
	if err := s.startLB(); err != nil {
		return Report{}, err
	}
	blues, err := s.startGreeters("blue", 2)
	if err != nil {
		return Report{}, err
	}
	if err := s.awaitServing(ctx, "greeter-blue-1", "greeter-blue-2"); err != nil {
		return Report{}, err
	}
	r := Report{LBAddr: s.lbAddr, ConsulAddr: s.consulAddr}
	r.ThroughLB = s.callThroughLB(ctx)
	r.ViaResolver = s.callViaResolver(ctx)
	r.Switch, err = s.blueGreen(ctx, blues)
	return r, err
}

func (s *stack) startConsul() error {
	ports, err := freePorts(4)
	if err != nil {
		return err
	}
	p, err := start(s.opts.Dir, "consul", s.opts.Consul, "agent", "-dev", "-bind=127.0.0.1", "-client=127.0.0.1",
		fmt.Sprint("-http-port=", ports[0]), "-dns-port=-1", "-grpc-port=-1", "-grpc-tls-port=-1",
		fmt.Sprint("-serf-lan-port=", ports[1]), fmt.Sprint("-serf-wan-port=", ports[2]),
		fmt.Sprint("-server-port=", ports[3]), "-log-level=warn", "-node=demo")
	if err != nil {
		return err
	}
	s.procs = append(s.procs, p)
	s.consulAddr = fmt.Sprint("127.0.0.1:", ports[0])
	if s.client, err = api.NewClient(&api.Config{Address: s.consulAddr}); err != nil {
		return err
	}
	err = waitUntil(30*time.Second, "consul to elect a leader", func() error {
		if err := p.running(); err != nil {
			return err
		}
		leader, err := s.client.Status().Leader()
		if err == nil && leader == "" {
			err = fmt.Errorf("no leader yet")
		}
		return err
	})
	s.say("consul agent -dev on %s (UI: http://%s/ui)", s.consulAddr, s.consulAddr)
	return err
}

func freePorts(n int) ([]int, error) {
	ports := make([]int, n)
	for i := range ports {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		ports[i] = p
	}
	return ports, nil
}

// startLB writes the load balancer's configs and starts `lbctl run`.
func (s *stack) startLB() error {
	lbDir := filepath.Join(s.opts.Dir, "lb")
	if err := os.MkdirAll(filepath.Join(lbDir, "conf.d"), 0o755); err != nil {
		return err
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	s.lbAddr = fmt.Sprint("127.0.0.1:", port)
	if err := os.WriteFile(filepath.Join(lbDir, "nginx.conf"), []byte(nginxConf(lbDir)), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(lbDir, "lbctl.yaml"), []byte(s.lbConfig(lbDir, port)), 0o644); err != nil {
		return err
	}
	p, err := start(lbDir, "lbctl-run", s.opts.LBCTL, "run", "--config", filepath.Join(lbDir, "lbctl.yaml"))
	if err != nil {
		return err
	}
	s.procs = append(s.procs, p)
	s.say("lbctl run: supervises nginx, follows greeter's instances in Consul (live upstreams: no reload); gRPC on %s", s.lbAddr)
	return waitUntil(30*time.Second, "lbctl run to register the load balancer", func() error {
		if err := p.running(); err != nil {
			return err
		}
		entries, _, err := s.client.Health().Service("grpc-lb", "", true, nil)
		if err == nil && len(entries) == 0 {
			err = fmt.Errorf("grpc-lb not passing yet")
		}
		return err
	})
}

func (s *stack) lbConfig(dir string, port int) string {
	return fmt.Sprintf(`# The demo load balancer: lbctl run supervising nginx.
consul: {address: %[1]s}
nginx:
  binary: %[2]s
  config: %[3]s/nginx.conf
  prefix: %[3]s
  error_log: %[3]s/nginx-error.log
  services_conf: %[3]s/conf.d/lbctl.conf
  # Instance changes go to nginx's Lua balancer, no reload (lbctl falls back
  # to reloads, and says so, when nginx has no Lua module).
  live_upstreams: true
  live_dir: %[3]s/live
lb_id: demo-lb
services:
  - name: greeter
    listen: 127.0.0.1:%[4]d
control: {socket: %[3]s/lbctl.sock}
programs:
  - name: nginx
    command: [%[2]s, -p, %[3]s, -c, %[3]s/nginx.conf, -g, "daemon off;"]
    wait_for_gates: [first-render]
    stopsignal: QUIT
    essential: true
register:
  name: grpc-lb
  address: 127.0.0.1
  port: %[4]d
  check: {type: tcp, interval: 1s}
`, s.consulAddr, s.opts.Nginx, dir, port)
}

func nginxConf(dir string) string {
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;\n"
	}
	return user + luaModules() + fmt.Sprintf(`worker_processes 1;
worker_shutdown_timeout 10s;
error_log %[1]s/nginx-error.log notice;
pid %[1]s/nginx.pid;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path %[1]s/tmp-client;
    proxy_temp_path %[1]s/tmp-proxy;
    fastcgi_temp_path %[1]s/tmp-fastcgi;
    uwsgi_temp_path %[1]s/tmp-uwsgi;
    scgi_temp_path %[1]s/tmp-scgi;
    include %[1]s/conf.d/*.conf;
}
`, dir)
}

// luaModules loads Debian's Lua module (and the NDK it needs) when it is
// installed (scripts/install-deps.sh installs it).
func luaModules() string {
	var lines string
	for _, m := range []string{"/usr/lib/nginx/modules/ndk_http_module.so", "/usr/lib/nginx/modules/ngx_http_lua_module.so"} {
		if _, err := os.Stat(m); err != nil {
			return ""
		}
		lines += "load_module " + m + ";\n"
	}
	return lines
}

// startGreeters starts n greeters tagged tag, each under `lbctl register --`,
// which registers it once it listens (gRPC health check) and drains it on SIGTERM.
func (s *stack) startGreeters(tag string, n int) ([]*proc, error) {
	dir := filepath.Join(s.opts.Dir, "apps") // no lbctl.yaml here: flags only
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var started []*proc
	for i := 1; i <= n; i++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		name := fmt.Sprintf("greeter-%s-%d", tag, i)
		p, err := start(dir, name, s.opts.LBCTL, "register", "--consul-addr", s.consulAddr,
			"--name", "greeter", "--id", name, "--address", "127.0.0.1", "--port", fmt.Sprint(port),
			"--tag", tag, "--meta", "version="+tag, "--check", "grpc", "--check-interval", "1s",
			"--drain-timeout", "10s", "--",
			s.opts.Greeter, "-listen", fmt.Sprint("127.0.0.1:", port), "-instance", name, "-version", tag)
		if err != nil {
			return nil, err
		}
		s.procs = append(s.procs, p)
		started = append(started, p)
		s.say("lbctl register -- greeter-server: %s on 127.0.0.1:%d, tag %s", name, port, tag)
	}
	return started, waitUntil(30*time.Second, tag+" greeters passing in Consul", func() error {
		for _, p := range started {
			if err := p.running(); err != nil {
				return err
			}
		}
		entries, _, err := s.client.Health().Service("greeter", tag, true, nil)
		if err == nil && len(entries) < n {
			err = fmt.Errorf("%d of %d passing", len(entries), n)
		}
		return err
	})
}
