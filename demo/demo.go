// Package demo runs lbctl's local demo stack on loopback, no Docker needed:
// a Consul agent, greeter backends, nginx rendered by lbctl, and a client
// calling through it. It prints what happens and returns the figures, which
// the end-to-end test asserts.
package demo

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/lbctl/lbctl/greeter"
)

// Options say where the binaries are and where the demo may write.
type Options struct {
	LBCTL, Greeter, Consul, Nginx string // binaries
	Dir                           string // work directory (configs, logs)
	Calls                         int    // calls through the load balancer
	Out                           io.Writer
}

// Report is what the demo measured.
type Report struct {
	Calls       int
	Failed      int
	ByInstance  map[string]int
	LBAddr      string
	ConsulAddr  string
	RenderedCfg string
}

// stack is everything the demo started, stopped in reverse order.
type stack struct {
	opts  Options
	procs []*proc
}

func (s *stack) say(format string, args ...any) {
	fmt.Fprintf(s.opts.Out, "demo: "+format+"\n", args...)
}

func (s *stack) stopAll() {
	for i := len(s.procs) - 1; i >= 0; i-- {
		s.procs[i].stop(syscall.SIGTERM, 10*time.Second)
	}
}

// Run starts the stack, makes the calls, stops everything and reports.
func Run(ctx context.Context, opts Options) (Report, error) {
	s := &stack{opts: opts}
	defer s.stopAll()
	consulAddr, client, err := s.startConsul()
	if err != nil {
		return Report{}, err
	}
	if err := s.startGreeters(client, "blue", 2); err != nil {
		return Report{}, err
	}
	lbPort, err := freePort()
	if err != nil {
		return Report{}, err
	}
	cfgPath, err := s.writeConfigs(consulAddr, lbPort)
	if err != nil {
		return Report{}, err
	}
	rendered, err := s.render(cfgPath)
	if err != nil {
		return Report{}, err
	}
	if err := s.startNginx(); err != nil {
		return Report{}, err
	}
	lbAddr := "127.0.0.1:" + strconv.Itoa(lbPort)
	r := s.callThrough(ctx, lbAddr)
	r.LBAddr, r.ConsulAddr, r.RenderedCfg = lbAddr, consulAddr, rendered
	return r, nil
}

func (s *stack) startConsul() (string, *api.Client, error) {
	ports := make([]int, 4)
	for i := range ports {
		p, err := freePort()
		if err != nil {
			return "", nil, err
		}
		ports[i] = p
	}
	p, err := start(s.opts.Dir, "consul", s.opts.Consul, "agent", "-dev", "-bind=127.0.0.1", "-client=127.0.0.1",
		"-http-port="+strconv.Itoa(ports[0]), "-dns-port=-1", "-grpc-port=-1", "-grpc-tls-port=-1",
		"-serf-lan-port="+strconv.Itoa(ports[1]), "-serf-wan-port="+strconv.Itoa(ports[2]),
		"-server-port="+strconv.Itoa(ports[3]), "-log-level=warn", "-node=demo")
	if err != nil {
		return "", nil, err
	}
	s.procs = append(s.procs, p)
	addr := "127.0.0.1:" + strconv.Itoa(ports[0])
	client, err := api.NewClient(&api.Config{Address: addr})
	if err != nil {
		return "", nil, err
	}
	err = waitUntil(30*time.Second, "consul to elect a leader", func() error {
		if err := p.running(); err != nil {
			return err
		}
		leader, err := client.Status().Leader()
		if err == nil && leader == "" {
			err = fmt.Errorf("no leader yet")
		}
		return err
	})
	s.say("consul agent -dev on %s (UI: http://%s/ui)", addr, addr)
	return addr, client, err
}

// startGreeters starts n greeter instances tagged tag and registers each with
// a gRPC health check.
func (s *stack) startGreeters(client *api.Client, tag string, n int) error {
	for i := 1; i <= n; i++ {
		port, err := freePort()
		if err != nil {
			return err
		}
		name := fmt.Sprintf("greeter-%s-%d", tag, i)
		addr := "127.0.0.1:" + strconv.Itoa(port)
		p, err := start(s.opts.Dir, name, s.opts.Greeter, "-listen", addr, "-instance", name, "-version", tag)
		if err != nil {
			return err
		}
		s.procs = append(s.procs, p)
		reg := &api.AgentServiceRegistration{
			ID: name, Name: "greeter", Address: "127.0.0.1", Port: port, Tags: []string{tag},
			Meta:  map[string]string{"version": tag},
			Check: &api.AgentServiceCheck{GRPC: addr, Interval: "1s", Timeout: "1s"},
		}
		if err := client.Agent().ServiceRegister(reg); err != nil {
			return fmt.Errorf("register %s: %w", name, err)
		}
		s.say("started %s on %s, registered in Consul with a gRPC health check", name, addr)
	}
	return waitUntil(30*time.Second, "greeters to pass their health checks", func() error {
		entries, _, err := client.Health().Service("greeter", tag, true, nil)
		if err == nil && len(entries) < n {
			err = fmt.Errorf("%d of %d passing", len(entries), n)
		}
		return err
	})
}

func (s *stack) writeConfigs(consulAddr string, lbPort int) (string, error) {
	confD := filepath.Join(s.opts.Dir, "conf.d")
	if err := os.MkdirAll(confD, 0o755); err != nil {
		return "", err
	}
	lbctlYAML := fmt.Sprintf(`# The demo's lbctl config: one gRPC service behind nginx.
consul:
  address: %s
nginx:
  binary: %s
  config: %s/nginx.conf
  services_conf: %s/lbctl.conf
services:
  - name: greeter
    listen: 127.0.0.1:%d
`, consulAddr, s.opts.Nginx, s.opts.Dir, confD, lbPort)
	cfgPath := filepath.Join(s.opts.Dir, "lbctl.yaml")
	if err := os.WriteFile(cfgPath, []byte(lbctlYAML), 0o644); err != nil {
		return "", err
	}
	return cfgPath, os.WriteFile(filepath.Join(s.opts.Dir, "nginx.conf"), []byte(nginxConf(s.opts.Dir)), 0o644)
}

func nginxConf(dir string) string {
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;\n"
	}
	return user + fmt.Sprintf(`worker_processes 1;
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

func (s *stack) render(cfgPath string) (string, error) {
	s.say("lbctl render --once --config %s", cfgPath)
	out, err := exec.Command(s.opts.LBCTL, "render", "--once", "--config", cfgPath).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("lbctl render: %v: %s", err, out)
	}
	rendered, err := os.ReadFile(filepath.Join(s.opts.Dir, "conf.d", "lbctl.conf"))
	if err != nil {
		return "", err
	}
	s.say("rendered %s:\n%s", filepath.Join(s.opts.Dir, "conf.d", "lbctl.conf"), rendered)
	return string(rendered), nil
}

func (s *stack) startNginx() error {
	p, err := start(s.opts.Dir, "nginx", s.opts.Nginx, "-p", s.opts.Dir, "-c", filepath.Join(s.opts.Dir, "nginx.conf"), "-g", "daemon off;")
	if err != nil {
		return err
	}
	s.procs = append(s.procs, p)
	return waitUntil(10*time.Second, "nginx to start", func() error {
		if err := p.running(); err != nil {
			return err
		}
		_, err := os.Stat(filepath.Join(s.opts.Dir, "nginx.pid"))
		return err
	})
}

// callThrough makes the demo's calls through nginx and tallies who answered.
func (s *stack) callThrough(ctx context.Context, lbAddr string) Report {
	r := Report{Calls: s.opts.Calls, ByInstance: map[string]int{}}
	conn, client, err := greeter.Dial(lbAddr)
	if err != nil {
		r.Failed = r.Calls
		return r
	}
	defer conn.Close()
	s.say("calling greeter %d times through nginx on %s", s.opts.Calls, lbAddr)
	for i := 0; i < s.opts.Calls; i++ {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		reply, err := greeter.Hello(cctx, client, "demo")
		cancel()
		if err != nil {
			r.Failed++
			continue
		}
		r.ByInstance[reply.GetInstance()]++
	}
	names := make([]string, 0, len(r.ByInstance))
	for n := range r.ByInstance {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		s.say("  %-16s answered %d calls", n, r.ByInstance[n])
	}
	s.say("calls: %d, failed: %d", r.Calls, r.Failed)
	return r
}
