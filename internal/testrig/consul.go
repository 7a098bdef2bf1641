package testrig

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// Consul is a real Consul agent run by a test.
type Consul struct {
	// Addr is the agent's HTTP API, 127.0.0.1:port.
	Addr string
	// Client talks to it.
	Client *api.Client

	t          testing.TB
	bin        string
	args       []string
	persistent bool
	early      bool
	dir        string
	logPath    string
	cmd        *exec.Cmd
	exited     chan struct{}
	// ports are the agent's TCP ports (HTTP, serf LAN and WAN, server RPC);
	// serf also uses its two on UDP. held keeps them while it is stopped.
	ports, serfPorts []int
	held             *portHold
}

// ConsulOptions tune StartConsul.
type ConsulOptions struct {
	// Persistent runs a single-server cluster with a data directory instead of
	// -dev, so registrations survive Stop and Start. Start-up takes longer.
	Persistent bool
	// Early returns as soon as the agent answers HTTP, before it has a leader
	// or has registered its own node: what lbctl finds when it starts beside
	// an agent that has just started.
	Early bool
}

// ConsulBinary finds the consul built by scripts/install-deps.sh (or $LBCTL_CONSUL).
func ConsulBinary(t testing.TB) string {
	return findBinary(t, "consul", "LBCTL_CONSUL", filepath.Join(CacheDir(), "consul-1.21.0", "consul"))
}

// StartConsul starts `consul agent -dev` on free loopback ports and waits
// until it has a leader and has registered its own node (unless Early). It is stopped when the test ends.
func StartConsul(t testing.TB, opts ...ConsulOptions) *Consul {
	t.Helper()
	var o ConsulOptions
	if len(opts) > 0 {
		o = opts[0]
	}
	dir := t.TempDir()
	httpPort := FreePort(t)
	c := &Consul{
		Addr:    fmt.Sprintf("127.0.0.1:%d", httpPort),
		t:       t,
		bin:     ConsulBinary(t),
		logPath: filepath.Join(dir, "consul.log"),
	}
	c.persistent, c.early, c.dir = o.Persistent, o.Early, dir
	// Until the test has the agent, every port may still change: a port
	// taken between FreePort and the agent's bind is retried on fresh ones.
	for attempt := 1; ; attempt++ {
		c.pickPorts(httpPort)
		client, err := api.NewClient(&api.Config{Address: c.Addr})
		if err != nil {
			t.Fatalf("consul client: %v", err)
		}
		c.Client = client
		err = c.start()
		if err == nil {
			break
		}
		if attempt == 3 || !strings.Contains(err.Error(), "address already in use") {
			t.Fatalf("consul did not come up: %v", err)
		}
		httpPort = FreePort(t)
		c.Addr = fmt.Sprintf("127.0.0.1:%d", httpPort)
	}
	// Cleanups run last first: the log is shown once the agent has stopped.
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("consul agent log (%s), last 16 KB:\n%s", c.logPath, logTail(c.logPath, 16000))
		}
	})
	t.Cleanup(func() { c.stop(); c.held.release() })
	return c
}

// pickPorts sets the agent's arguments: the HTTP port given (the test's
// client knows it) and fresh ports for serf and the server RPC.
func (c *Consul) pickPorts(httpPort int) {
	lan, wan, server := FreePort(c.t), FreePort(c.t), FreePort(c.t)
	c.ports, c.serfPorts = []int{httpPort, lan, wan, server}, []int{lan, wan}
	c.args = []string{"agent", "-bind=127.0.0.1", "-client=127.0.0.1", "-node=lbctl-test",
		"-http-port=" + strconv.Itoa(httpPort), "-dns-port=-1", "-grpc-port=-1", "-grpc-tls-port=-1",
		"-serf-lan-port=" + strconv.Itoa(lan), "-serf-wan-port=" + strconv.Itoa(wan),
		"-server-port=" + strconv.Itoa(server), "-log-level=info", "-disable-host-node-id"}
	if c.persistent {
		c.args = append(c.args, "-server", "-bootstrap-expect=1", "-data-dir="+filepath.Join(c.dir, "data"),
			"-hcl=performance { raft_multiplier = 1 }", "-hcl=check_update_interval = \"0s\"")
	} else {
		c.args = append(c.args, "-dev")
	}
}

// Start restarts a stopped agent on the same ports and waits as StartConsul does.
func (c *Consul) Start() {
	c.t.Helper()
	c.held.release()
	c.held = nil
	if err := c.start(); err != nil {
		c.t.Fatalf("consul did not come up: %v", err)
	}
}

// start runs the agent once; on failure c.cmd is nil again.
func (c *Consul) start() error {
	logf, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(c.bin, c.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start consul: %w", err)
	}
	c.cmd, c.exited = cmd, make(chan struct{})
	go func(done chan struct{}) { cmd.Wait(); logf.Close(); close(done) }(c.exited)
	var exited error
	err = Poll(60*time.Second, func() error {
		select {
		case <-c.exited:
			exited = fmt.Errorf("consul exited: %s", logTail(c.logPath, 2000))
			return nil // stop polling: it will not come up
		default:
		}
		leader, err := c.Client.Status().Leader()
		if err != nil || c.early {
			return err
		}
		if leader == "" {
			return fmt.Errorf("no leader yet")
		}
		return c.nodeRegistered()
	})
	if exited != nil {
		c.cmd = nil
		return exited
	}
	if err != nil {
		c.stop()
	}
	return err
}

// nodeRegistered says whether the agent's own node is in the catalog: until
// it is, sessions (which belong to a node) cannot be created, and Consul
// answers "Missing node registration".
func (c *Consul) nodeRegistered() error {
	name, err := c.Client.Agent().NodeName()
	if err != nil {
		return err
	}
	node, _, err := c.Client.Catalog().Node(name, nil)
	if err != nil {
		return err
	}
	if node == nil {
		return fmt.Errorf("node %s not registered yet", name)
	}
	return nil
}

// Stop ends the agent (SIGINT, like Ctrl-C: it leaves gracefully) and waits.
// Until Start, its ports are held (see portHold): another process that took
// one would fail the restart, or answer the test in the agent's place. A
// request to the agent meanwhile fails, its connection closed at once.
func (c *Consul) Stop() {
	if c.cmd == nil {
		return
	}
	c.stop()
	held, err := holdPorts(c.ports, c.serfPorts)
	if err != nil {
		c.t.Logf("consul stopped; some of its ports could not be held until it starts again: %v", err)
	}
	c.held = held
}

// stop ends the agent, if it runs, and waits.
func (c *Consul) stop() {
	if c.cmd == nil {
		return
	}
	c.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-c.exited:
	case <-time.After(10 * time.Second):
		syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
		<-c.exited
	}
	c.cmd = nil
}

// Register registers a service instance through the agent, failing the test on error.
func (c *Consul) Register(reg *api.AgentServiceRegistration) {
	c.t.Helper()
	if err := c.Client.Agent().ServiceRegister(reg); err != nil {
		c.t.Fatalf("register %s: %v", reg.ID, err)
	}
}

// Deregister removes a service instance, failing the test on error.
func (c *Consul) Deregister(id string) {
	c.t.Helper()
	if err := c.Client.Agent().ServiceDeregister(id); err != nil {
		c.t.Fatalf("deregister %s: %v", id, err)
	}
}
