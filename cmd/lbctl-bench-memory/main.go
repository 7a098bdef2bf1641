// Command lbctl-bench-memory measures what the load balancer's control plane
// costs in memory when it watches 100 services × 10 instances: lbctl run
// (supervising nginx, rendering, reloading) against supervisord running
// consul-template doing the same job on the same Consul, same machine.
// Each stack renders every service, then goes through -changes health changes
// (an instance going critical and coming back, each rendered and reloaded),
// runs for -settle, and has its memory read from /proc/PID/smaps_rollup,
// nginx excluded from both: anonymous memory (heap, stacks: what the process
// costs), PSS, and RSS, whose file-backed rest is the binary's clean pages
// (page cache the kernel reclaims). For lbctl it also prints what lbctl
// logged when it returned its start-up heap to the kernel, before and after.
// -lbctl takes several binaries, comma-separated (a static and a PIE build,
// say), measured one after the other in the same run.
//
//	go run ./cmd/lbctl-bench-memory -lbctl $(which lbctl)
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/lbctl/lbctl/internal/freeport"
	"github.com/lbctl/lbctl/internal/procmem"
	"github.com/lbctl/lbctl/internal/testrig"
)

type options struct {
	lbctl, consul, consulTemplate, nginx, supervisord string
	services, instances, changes                      int
	settle                                            time.Duration
}

func main() {
	home, _ := os.UserHomeDir()
	cache := filepath.Join(home, ".cache", "lbctl")
	var o options
	flag.StringVar(&o.lbctl, "lbctl", "lbctl", "lbctl binaries, comma-separated")
	flag.StringVar(&o.consul, "consul", filepath.Join(cache, "consul-1.21.0", "consul"), "consul binary")
	flag.StringVar(&o.consulTemplate, "consul-template", testrig.ConsulTemplatePath(), "consul-template binary")
	flag.StringVar(&o.nginx, "nginx", "/usr/sbin/nginx", "nginx binary")
	flag.StringVar(&o.supervisord, "supervisord", "/usr/bin/supervisord", "supervisord binary (Debian: apt-get install supervisor)")
	flag.IntVar(&o.services, "services", 100, "services watched")
	flag.IntVar(&o.instances, "instances", 10, "instances per service")
	flag.IntVar(&o.changes, "changes", 40, "health changes rendered before memory is read (half out, half back)")
	flag.DurationVar(&o.settle, "settle", 3*time.Second, "how long the stack runs after the changes before memory is read")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "lbctl-bench-memory:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	dir, err := os.MkdirTemp("", "lbctl-bench-memory-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	consul, addr, err := startConsul(o.consul, dir)
	if err != nil {
		return err
	}
	defer stop(consul)
	if err := registerInstances(addr, o.services, o.instances); err != nil {
		return err
	}
	var lbs []lbctlResult
	for i, bin := range strings.Split(o.lbctl, ",") {
		m, released, err := measureLbctl(o, bin, addr, filepath.Join(dir, fmt.Sprintf("lbctl-%d", i)))
		if err != nil {
			return fmt.Errorf("lbctl %s: %w", bin, err)
		}
		lbs = append(lbs, lbctlResult{bin, m, released})
	}
	sd, ct, err := measureSupervisord(o, addr, filepath.Join(dir, "supervisord"))
	if err != nil {
		return fmt.Errorf("supervisord + consul-template: %w", err)
	}
	fmt.Printf("Memory watching %d services × %d instances (nginx not counted), after %d health changes rendered and %s settled:\n\n",
		o.services, o.instances, o.changes, o.settle)
	fmt.Println("| stack | anonymous (heap, stacks) | PSS | RSS (of which clean file-backed) |")
	fmt.Println("|---|---|---|---|")
	for _, lb := range lbs {
		fmt.Printf("| lbctl run (%s) | %.1f MB | %.1f MB | %.1f MB (%.1f) |\n",
			filepath.Base(lb.bin), mb(lb.m.Anonymous), mb(lb.m.PSS), mb(lb.m.RSS), mb(lb.m.File()))
	}
	sum := procmem.Usage{RSS: sd.RSS + ct.RSS, PSS: sd.PSS + ct.PSS, Anonymous: sd.Anonymous + ct.Anonymous}
	fmt.Printf("| supervisord 4.2.5 + consul-template %s | %.1f MB (%.1f + %.1f) | %.1f MB | %.1f MB (%.1f) |\n", testrig.ConsulTemplateVersion,
		mb(sum.Anonymous), mb(sd.Anonymous), mb(ct.Anonymous), mb(sum.PSS), mb(sum.RSS), mb(sum.File()))
	fmt.Println("\nlbctl returned its start-up heap to the kernel once nginx was running (its log line):")
	for _, lb := range lbs {
		b, a := lb.released[0], lb.released[1]
		fmt.Printf("- %s: anonymous %.1f -> %.1f MB, PSS %.1f -> %.1f MB, RSS %.1f -> %.1f MB\n", filepath.Base(lb.bin),
			mb(b.Anonymous), mb(a.Anonymous), mb(b.PSS), mb(a.PSS), mb(b.RSS), mb(a.RSS))
	}
	return nil
}

// lbctlResult is one lbctl binary's memory, and what it logged around
// returning its start-up heap.
type lbctlResult struct {
	bin      string
	m        procmem.Usage
	released [2]procmem.Usage
}

func mb(kb int) float64 { return float64(kb) / 1024 }

// startConsul runs a dev agent on free ports and waits for its leader.
func startConsul(bin, dir string) (*exec.Cmd, string, error) {
	ports := freePorts(4)
	cmd := exec.Command(bin, "agent", "-dev", "-bind=127.0.0.1", "-client=127.0.0.1", "-log-level=error",
		fmt.Sprint("-http-port=", ports[0]), "-dns-port=-1", "-grpc-port=-1", "-grpc-tls-port=-1",
		fmt.Sprint("-serf-lan-port=", ports[1]), fmt.Sprint("-serf-wan-port=", ports[2]), fmt.Sprint("-server-port=", ports[3]))
	if err := startLogged(cmd, filepath.Join(dir, "consul.log")); err != nil {
		return nil, "", err
	}
	addr := fmt.Sprint("127.0.0.1:", ports[0])
	client, _ := api.NewClient(&api.Config{Address: addr})
	err := poll(30*time.Second, func() error {
		leader, err := client.Status().Leader()
		if err == nil && leader == "" {
			err = fmt.Errorf("no leader")
		}
		return err
	})
	return cmd, addr, err
}

// registerInstances puts services × instances passing instances in the catalog.
func registerInstances(addr string, services, instances int) error {
	client, err := api.NewClient(&api.Config{Address: addr})
	if err != nil {
		return err
	}
	for s := range services {
		for i := range instances {
			if _, err := client.Catalog().Register(instanceRegistration(s, i), nil); err != nil {
				return fmt.Errorf("register: %w", err)
			}
		}
	}
	return nil
}

// instanceRegistration is instance i of service s, on node i.
func instanceRegistration(s, i int) *api.CatalogRegistration {
	return &api.CatalogRegistration{
		Node: fmt.Sprintf("node-%d", i), Address: fmt.Sprintf("10.0.%d.1", i),
		Service: &api.AgentService{ID: fmt.Sprintf("svc-%03d-%d", s, i), Service: fmt.Sprintf("svc-%03d", s),
			Address: instanceAddress(s, i), Port: 7000 + i, Meta: map[string]string{"version": "v1"}},
	}
}

func instanceAddress(s, i int) string { return fmt.Sprintf("10.%d.%d.%d", s/250, s%250, i+1) }

func measureLbctl(o options, bin, consulAddr, dir string) (m procmem.Usage, released [2]procmem.Usage, err error) {
	if err := os.MkdirAll(filepath.Join(dir, "conf.d"), 0o755); err != nil {
		return m, released, err
	}
	var services strings.Builder
	for s := range o.services {
		fmt.Fprintf(&services, "  - {name: svc-%03d, listen: \"127.0.0.1:%d\"}\n", s, freePorts(1)[0])
	}
	cfg := fmt.Sprintf(`consul: {address: %q}
nginx: {binary: %q, config: %q, prefix: %q, services_conf: %q}
lb_id: bench
services:
%scontrol: {socket: %q}
programs:
  - name: nginx
    command: [%q, -p, %q, -c, %q, -g, "daemon off;"]
    wait_for_gates: [first-render]
    stopsignal: QUIT
`, consulAddr, o.nginx, filepath.Join(dir, "nginx.conf"), dir, filepath.Join(dir, "conf.d", "lbctl.conf"),
		services.String(), filepath.Join(dir, "lbctl.sock"), o.nginx, dir, filepath.Join(dir, "nginx.conf"))
	if err := writeNginxConf(dir); err != nil {
		return m, released, err
	}
	if err := os.WriteFile(filepath.Join(dir, "lbctl.yaml"), []byte(cfg), 0o644); err != nil {
		return m, released, err
	}
	logPath := filepath.Join(dir, "lbctl.log")
	cmd := exec.Command(bin, "run", "--config", filepath.Join(dir, "lbctl.yaml"), "--log-level", "info")
	if err := startLogged(cmd, logPath); err != nil {
		return m, released, err
	}
	defer stop(cmd)
	if err := renderedAll(filepath.Join(dir, "conf.d", "lbctl.conf"), o.services); err != nil {
		return m, released, err
	}
	if err := poll(60*time.Second, func() (err error) { released, err = releaseLogged(logPath); return err }); err != nil {
		return m, released, err
	}
	m, err = changedAndSettled(cmd.Process.Pid, consulAddr, filepath.Join(dir, "conf.d", "lbctl.conf"), o)
	return m, released, err
}

// releaseLogged finds lbctl's "released start-up memory" line in its log
// and returns the memory it reports before and after, in kB.
func releaseLogged(logPath string) (ba [2]procmem.Usage, err error) {
	b, err := os.ReadFile(logPath)
	if err != nil {
		return ba, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.Contains(line, `msg="released start-up memory"`) {
			continue
		}
		for _, f := range strings.Fields(line) {
			k, v, _ := strings.Cut(f, "=")
			n, _ := strconv.Atoi(v)
			for i, when := range []string{"before", "after"} {
				switch k {
				case "anon_" + when + "_kb":
					ba[i].Anonymous = n
				case "pss_" + when + "_kb":
					ba[i].PSS = n
				case "rss_" + when + "_kb":
					ba[i].RSS = n
				}
			}
		}
		return ba, nil
	}
	return ba, fmt.Errorf("lbctl has not logged releasing its start-up memory")
}

func measureSupervisord(o options, consulAddr, dir string) (supervisord, consulTemplate procmem.Usage, err error) {
	if err := os.MkdirAll(filepath.Join(dir, "conf.d"), 0o755); err != nil {
		return supervisord, consulTemplate, err
	}
	tpl := `{{ range services }}{{ if ne .Name "consul" }}upstream {{ .Name }} {
{{ range service .Name }}  server {{ .Address }}:{{ .Port }};
{{ end }}}
{{ end }}{{ end }}`
	out := filepath.Join(dir, "conf.d", "lb.conf")
	if err := os.WriteFile(filepath.Join(dir, "lb.tpl"), []byte(tpl), 0o644); err != nil {
		return supervisord, consulTemplate, err
	}
	if err := writeNginxConf(dir); err != nil {
		return supervisord, consulTemplate, err
	}
	conf := fmt.Sprintf(`[supervisord]
nodaemon=true
logfile=%[1]s/supervisord.log
pidfile=%[1]s/supervisord.pid
[unix_http_server]
file=%[1]s/supervisor.sock
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
[supervisorctl]
serverurl=unix://%[1]s/supervisor.sock
[program:nginx]
command=%[2]s -p %[1]s -c %[1]s/nginx.conf -g "daemon off;"
stopsignal=QUIT
[program:consul-template]
command=%[3]s -consul-addr %[4]s -template "%[1]s/lb.tpl:%[5]s:supervisorctl -c %[1]s/supervisord.conf restart nginx"
`, dir, o.nginx, o.consulTemplate, consulAddr, out)
	if err := os.WriteFile(filepath.Join(dir, "supervisord.conf"), []byte(conf), 0o644); err != nil {
		return supervisord, consulTemplate, err
	}
	cmd := exec.Command(o.supervisord, "-c", filepath.Join(dir, "supervisord.conf"))
	if err := startLogged(cmd, filepath.Join(dir, "supervisord.out")); err != nil {
		return supervisord, consulTemplate, err
	}
	defer stop(cmd)
	if err := renderedAll(out, o.services); err != nil {
		return supervisord, consulTemplate, err
	}
	sd, err := changedAndSettled(cmd.Process.Pid, consulAddr, out, o)
	if err != nil {
		return supervisord, consulTemplate, err
	}
	ctPID, err := childNamed(cmd.Process.Pid, "consul-template")
	if err != nil {
		return supervisord, consulTemplate, err
	}
	ct, err := procmem.Of(ctPID)
	return sd, ct, err
}

func writeNginxConf(dir string) error {
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;\n"
	}
	conf := user + fmt.Sprintf("worker_processes 1;\nerror_log %[1]s/error.log;\npid %[1]s/nginx.pid;\nevents {}\nhttp {\n  access_log off;\n  client_body_temp_path %[1]s/t1; proxy_temp_path %[1]s/t2; fastcgi_temp_path %[1]s/t3; uwsgi_temp_path %[1]s/t4; scgi_temp_path %[1]s/t5;\n  include %[1]s/conf.d/*.conf;\n}\n", dir)
	return os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o644)
}

// renderedAll waits until the rendered file has an upstream per service.
func renderedAll(rendered string, services int) error {
	return poll(60*time.Second, func() error {
		b, err := os.ReadFile(rendered)
		if err == nil && strings.Count(string(b), "upstream ") < services {
			err = fmt.Errorf("%d upstreams rendered", strings.Count(string(b), "upstream "))
		}
		return err
	})
}

// changedAndSettled puts the stack through o.changes health changes, lets
// it run for the settle time, and reads pid's memory.
func changedAndSettled(pid int, consulAddr, rendered string, o options) (procmem.Usage, error) {
	if err := changeHealth(consulAddr, rendered, o); err != nil {
		return procmem.Usage{}, err
	}
	time.Sleep(o.settle) // a measurement window, not a wait for an event
	return procmem.Of(pid)
}

// changeHealth takes instance 0 of one service after another out of service
// (a critical check) and back in, waiting each time until the rendered file
// shows it: o.changes changes, each rendered and reloaded.
func changeHealth(consulAddr, rendered string, o options) error {
	client, err := api.NewClient(&api.Config{Address: consulAddr})
	if err != nil {
		return err
	}
	for n := range o.changes {
		s, status := (n/2)%o.services, api.HealthCritical
		if n%2 == 1 {
			status = api.HealthPassing
		}
		if err := setInstanceHealth(client, s, status); err != nil {
			return err
		}
		addr := fmt.Sprintf("%s:%d", instanceAddress(s, 0), 7000)
		err := poll(30*time.Second, func() error {
			b, err := os.ReadFile(rendered)
			if err == nil && strings.Contains(string(b), addr) != (status == api.HealthPassing) {
				err = fmt.Errorf("%s not rendered %s yet", addr, status)
			}
			return err
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// setInstanceHealth registers instance 0 of service s again with a check in status.
func setInstanceHealth(client *api.Client, s int, status string) error {
	reg := instanceRegistration(s, 0)
	reg.Check = &api.AgentCheck{Node: reg.Node, CheckID: "health-" + reg.Service.ID, Name: "health",
		Status: status, ServiceID: reg.Service.ID}
	_, err := client.Catalog().Register(reg, nil)
	return err
}

// childNamed finds the child of parent whose command name is name.
func childNamed(parent int, name string) (int, error) {
	entries, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, e := range entries {
		b, err := os.ReadFile(e)
		if err != nil {
			continue
		}
		s := string(b)
		open, closeIdx := strings.Index(s, "("), strings.LastIndex(s, ")")
		if open < 0 || closeIdx < 0 || s[open+1:closeIdx] != name {
			continue
		}
		fields := strings.Fields(s[closeIdx+1:])
		if len(fields) > 1 && fields[1] == strconv.Itoa(parent) {
			return strconv.Atoi(strings.Fields(s)[0])
		}
	}
	return 0, fmt.Errorf("no %s under pid %d", name, parent)
}

func startLogged(cmd *exec.Cmd, logPath string) error {
	f, err := os.Create(logPath)
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	return cmd.Start()
}

func stop(cmd *exec.Cmd) {
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

func freePorts(n int) []int {
	ports := make([]int, n)
	for i := range ports {
		p, err := freeport.Get()
		if err != nil {
			panic(err)
		}
		ports[i] = p
	}
	return ports
}

func poll(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}
