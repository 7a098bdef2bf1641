package hosts

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/lbctl/lbctl/internal/testrig"
	"github.com/lbctl/lbctl/lbstate"
)

// Binaries are the programs the hosts run, built once per test package run.
type Binaries struct {
	LBCTL, Greeter string
}

// Build compiles lbctl and greeter-server into dir (go build, no -race: they
// are the products the images ship). Call it once, from TestMain.
func Build(dir string) (Binaries, error) {
	b := Binaries{LBCTL: filepath.Join(dir, "lbctl"), Greeter: filepath.Join(dir, "greeter-server")}
	cmd := exec.Command("go", "build", "-o", dir+"/", "github.com/lbctl/lbctl/cmd/lbctl", "github.com/lbctl/lbctl/cmd/greeter-server")
	if out, err := cmd.CombinedOutput(); err != nil {
		return b, fmt.Errorf("go build: %v: %s", err, out)
	}
	return b, nil
}

// Cluster is the standard many-hosts layout: three Consul servers, two load
// balancers, four app hosts and a client host. Every host that is not a
// server runs a Consul client agent; lbctl on a host talks to its own agent.
type Cluster struct {
	*Net
	Bin     Binaries
	Servers []*Host
	LBs     []*LB
	Apps    []*Host
	Client  *Host
	// Agents are every host's Consul agent, by host name.
	Agents map[string]*ConsulAgent
}

// ClusterOptions shape a cluster.
type ClusterOptions struct {
	// Shift makes the load balancers follow shift splits and write the access
	// log the shift gate reads.
	Shift bool
	// Tag is the greeter service's tag in the load balancers' config: what
	// they serve while no split is recorded (empty: every instance).
	Tag string
}

// NewCluster makes the hosts, starts Consul everywhere and `lbctl run` on the
// load balancers, and waits until both have published their state.
func NewCluster(t testing.TB, bin Binaries, opts ...ClusterOptions) *Cluster {
	t.Helper()
	var o ClusterOptions
	if len(opts) > 0 {
		o = opts[0]
	}
	c := &Cluster{Net: New(t), Bin: bin, Agents: map[string]*ConsulAgent{}}
	for i := 1; i <= 3; i++ {
		c.Servers = append(c.Servers, c.AddHost(fmt.Sprintf("consul-%d", i)))
	}
	lbHosts := []*Host{c.AddHost("lb-1"), c.AddHost("lb-2")}
	for i := 1; i <= 4; i++ {
		c.Apps = append(c.Apps, c.AddHost(fmt.Sprintf("app-%d", i)))
	}
	c.Client = c.AddHost("client")
	var agents []*ConsulAgent
	for _, h := range c.Hosts() {
		a := h.StartConsul(strings.HasPrefix(h.Name, "consul-"), c.Servers)
		c.Agents[h.Name] = a
		agents = append(agents, a)
	}
	if err := WaitReady(agents, 90*time.Second); err != nil {
		t.Fatal(err)
	}
	c.Event("consul: 3 servers and %d client agents ready", len(agents)-3)
	for _, h := range lbHosts {
		c.LBs = append(c.LBs, c.startLB(h, o))
	}
	for _, lb := range c.LBs {
		testrig.WaitFor(t, 60*time.Second, lb.ID+" to publish its state", lb.Published)
	}
	c.Event("lbctl run on lb-1 and lb-2: serving, state published")
	return c
}

// Agent is h's Consul agent.
func (c *Cluster) Agent(h *Host) *ConsulAgent { return c.Agents[h.Name] }

// LB is a load balancer host: `lbctl run` supervising nginx.
type LB struct {
	ID   string // lb_id, also the host name
	Host *Host
	Addr string // gRPC listen address, IP:5000
	Run  *Proc
	// AccessLog is nginx's JSON access log of the greeter service (Shift only).
	AccessLog string

	bin, config string
}

func (c *Cluster) startLB(h *Host, o ClusterOptions) *LB {
	t := c.t
	t.Helper()
	n := testrig.NewNginxWith(t, testrig.NginxOptions{Lua: true})
	lb := &LB{ID: h.Name, Host: h, Addr: h.IP + ":5000", bin: c.Bin.LBCTL, config: filepath.Join(h.Dir, "lbctl.yaml")}
	shift := ""
	if o.Tag != "" {
		shift = fmt.Sprintf("\n    tag: %s", o.Tag)
	}
	if o.Shift {
		lb.AccessLog = filepath.Join(h.Dir, "greeter.access.log")
		shift += fmt.Sprintf("\n    shift: true\n    access_log: %s", lb.AccessLog)
	}
	var args []string
	for _, a := range n.Args() {
		args = append(args, fmt.Sprintf("%q", a))
	}
	cfg := fmt.Sprintf(`consul: {address: 127.0.0.1:8500}
lb_id: %[1]s
nginx:
  binary: %[2]s
  config: %[3]s
  prefix: %[4]s
  pid_file: %[5]s
  error_log: %[6]s
  services_conf: %[7]s/lbctl.conf
  live_upstreams: true
  live_dir: %[4]s/live
services:
  - name: greeter
    listen: %[8]s%[9]s
http: {address: "127.0.0.1:9180"}
control: {socket: %[10]s/lbctl.sock}
programs:
  - name: nginx
    command: [%[2]q, %[11]s, "-g", "daemon off;"]
    wait_for_gates: [first-render]
    stopsignal: QUIT
    essential: true
register:
  name: grpc-lb
  address: %[12]s
  port: 5000
  check: {type: tcp, interval: 1s}
`, lb.ID, n.Bin, n.MainConf, n.Dir, n.PIDFile, n.ErrorLog, n.ConfD, lb.Addr, shift, h.Dir, strings.Join(args, ", "), h.IP)
	if err := os.WriteFile(lb.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	lb.Start()
	return lb
}

// Start (re)starts `lbctl run`.
func (lb *LB) Start() {
	lb.Run = lb.Host.Start("lbctl-run", lb.bin, "run", "--config", lb.config, "--log-level", "debug")
}

// Healthz is nil when lb's /healthz answers 200, else an error with its answer.
func (lb *LB) Healthz() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:9180/healthz", nil)
	if err != nil {
		return err
	}
	resp, err := lb.Host.HTTPClient().Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s /healthz: %s: %s", lb.ID, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

// State is what lb has published under lbctl/lb/ (nil when its key is gone).
func (lb *LB) State(client *api.Client) (*api.KVPair, error) {
	p, _, err := client.KV().Get(lbstate.Prefix+lb.ID, nil)
	return p, err
}

// Published is nil once lb's key is there, held by a session, with a greeter query.
func (lb *LB) Published() error {
	if err := lb.Run.Running(); err != nil {
		return err
	}
	p, err := lb.State(lb.Host.Consul())
	if err != nil {
		return err
	}
	if p == nil || p.Session == "" || !strings.Contains(string(p.Value), `"greeter"`) {
		return fmt.Errorf("%s has not published yet", lb.ID)
	}
	return nil
}

// App is one `lbctl register -- greeter-server` on an app host.
type App struct {
	ID, Tag string
	Host    *Host
	Addr    string
	Proc    *Proc
}

// AppOptions tune StartApp.
type AppOptions struct {
	Port         int           // default 7000
	DrainTimeout time.Duration // default 30s
	// Bin and Args replace greeter-server (e.g. a faulty green); Args may use
	// {addr}, {id} and {tag}.
	Bin  string
	Args []string
}

// StartApp runs `lbctl register -- greeter-server` on h, tagged tag, with a
// gRPC check every second. It does not wait for the instance to pass.
func (c *Cluster) StartApp(h *Host, tag string, o AppOptions) *App {
	if o.Port == 0 {
		o.Port = 7000
	}
	if o.DrainTimeout == 0 {
		o.DrainTimeout = 30 * time.Second
	}
	a := &App{ID: fmt.Sprintf("greeter-%s-%s", tag, h.Name), Tag: tag, Host: h, Addr: fmt.Sprintf("%s:%d", h.IP, o.Port)}
	app := []string{c.Bin.Greeter, "-listen", a.Addr, "-instance", a.ID, "-version", tag}
	if o.Bin != "" {
		r := strings.NewReplacer("{addr}", a.Addr, "{id}", a.ID, "{tag}", tag)
		app = []string{o.Bin}
		for _, arg := range o.Args {
			app = append(app, r.Replace(arg))
		}
	}
	args := append([]string{"register", "--log-level", "debug", "--consul-addr", "127.0.0.1:8500",
		"--name", "greeter", "--id", a.ID, "--address", h.IP, "--port", fmt.Sprint(o.Port),
		"--tag", tag, "--meta", "version=" + tag, "--check", "grpc", "--check-interval", "1s",
		"--drain-timeout", o.DrainTimeout.String(), "--"}, app...)
	a.Proc = h.Start(a.ID, c.Bin.LBCTL, args...)
	return a
}

// Passing waits until every app is registered and passing, as the client
// host's agent sees it, and returns the health index of that answer.
func (c *Cluster) Passing(apps []*App, timeout time.Duration) (uint64, error) {
	client := c.Agent(c.Client).Client
	var index uint64
	err := testrig.Poll(timeout, func() error {
		entries, meta, err := client.Health().Service("greeter", "", true, nil)
		if err != nil {
			return err
		}
		passing := map[string]bool{}
		for _, e := range entries {
			passing[e.Service.ID] = true
		}
		for _, a := range apps {
			if err := a.Proc.Running(); err != nil {
				return err
			}
			if !passing[a.ID] {
				return fmt.Errorf("%s not passing yet", a.ID)
			}
		}
		index = meta.LastIndex
		return nil
	})
	return index, err
}

// Served waits until every live load balancer has confirmed the greeter
// health answer at index (or a later one): they now serve what it says.
func (c *Cluster) Served(index uint64, tags []string, timeout time.Duration) (lbstate.Result, error) {
	w := lbstate.NewWaiter(c.Agent(c.Client).Client, slog.New(slog.DiscardHandler))
	res, err := w.Wait(context.Background(), lbstate.Target{Service: "greeter", Tags: tags, Index: index}, timeout)
	if err == nil && res.TimedOut {
		err = fmt.Errorf("load balancers %v had not confirmed index %d after %s", res.Pending, index, timeout)
	}
	return res, err
}

// Drain sends SIGTERM to the app's `lbctl register`, which drains it, stops
// the greeter and deregisters it.
func (a *App) Drain() {
	a.Host.net.Event("SIGTERM %s on %s (drain)", a.ID, a.Host.Name)
	a.Proc.Signal(syscall.SIGTERM)
}
