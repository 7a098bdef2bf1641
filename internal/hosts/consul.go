package hosts

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/lbctl/lbctl/internal/testrig"
)

// ConsulAgent is the Consul agent of one host.
type ConsulAgent struct {
	Host   *Host
	Server bool
	Proc   *Proc
	Client *api.Client // the agent's HTTP API, from inside the host

	bin  string
	args []string
}

// StartConsul runs a Consul agent on h: a server (bootstrap-expect
// len(servers)) when server, else a client agent. Either joins the servers by
// address. HTTP is on 127.0.0.1:8500 in h's namespace, where lbctl finds it.
func (h *Host) StartConsul(server bool, servers []*Host) *ConsulAgent {
	t := h.net.t
	t.Helper()
	a := &ConsulAgent{Host: h, Server: server, Client: h.Consul(), bin: testrig.ConsulBinary(t)}
	a.args = []string{"agent", "-node=" + h.Name, "-bind=" + h.IP, "-client=127.0.0.1",
		"-data-dir=" + filepath.Join(h.Dir, "consul-data"), "-dns-port=-1", "-grpc-port=-1", "-grpc-tls-port=-1",
		"-node-id=" + nodeID(h.Name), "-log-level=info", "-retry-interval=1s",
		"-hcl=performance { raft_multiplier = 1 }", "-hcl=check_update_interval = \"0s\""}
	for _, s := range servers {
		a.args = append(a.args, "-retry-join="+s.IP)
	}
	if server {
		a.args = append(a.args, "-server", fmt.Sprintf("-bootstrap-expect=%d", len(servers)))
	}
	a.Start()
	return a
}

// nodeID is h's Consul node ID, fixed per host name. On a real machine the
// ID comes from the host, so an agent whose data is wiped comes back as the
// same node; the hosts here share one machine, so each gets its own from its
// name. A random ID after a wipe (-disable-host-node-id) makes a different
// node under a name the catalog still holds: the servers refuse its node
// registration ("Node name app-1 is reserved by node <old ID>"), its
// anti-entropy cannot run, and Consul 1.21's agent then drops every
// registration of a service ID the old node had (a nil dereference on the
// deregistration it keeps pending: an empty reply to the PUT) until it can
// sync, which made case 5 flake.
func nodeID(name string) string {
	sum := sha256.Sum256([]byte("lbctl-hosts " + name))
	h := hex.EncodeToString(sum[:16])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// Start (re)starts the agent with its arguments; it does not wait for it.
func (a *ConsulAgent) Start() {
	a.Host.net.t.Helper()
	a.Proc = a.Host.Start("consul", a.bin, a.args...)
}

// WipeData removes the agent's data directory (only while it is stopped).
func (a *ConsulAgent) WipeData() error {
	return os.RemoveAll(filepath.Join(a.Host.Dir, "consul-data"))
}

// Ready is nil once the agent answers, the cluster has a leader and the
// agent's own node is in the catalog (until then sessions cannot be created).
func (a *ConsulAgent) Ready() error {
	if err := a.Proc.Running(); err != nil {
		return err
	}
	leader, err := a.Client.Status().Leader()
	if err != nil {
		return err
	}
	if leader == "" {
		return fmt.Errorf("%s: no leader yet", a.Host.Name)
	}
	node, _, err := a.Client.Catalog().Node(a.Host.Name, nil)
	if err != nil {
		return err
	}
	if node == nil {
		return fmt.Errorf("node %s not in the catalog yet", a.Host.Name)
	}
	return nil
}

// Leader is the host name of the servers' current leader, as a sees it.
func (a *ConsulAgent) Leader(servers []*Host) (string, error) {
	addr, err := a.Client.Status().Leader()
	if err != nil {
		return "", err
	}
	ip, _, _ := strings.Cut(addr, ":")
	if i := slices.IndexFunc(servers, func(h *Host) bool { return h.IP == ip }); i >= 0 {
		return servers[i].Name, nil
	}
	return "", fmt.Errorf("no leader (%q)", addr)
}

// WaitReady waits until every agent is Ready.
func WaitReady(agents []*ConsulAgent, timeout time.Duration) error {
	for _, a := range agents {
		if err := testrig.Poll(timeout, a.Ready); err != nil {
			return fmt.Errorf("consul on %s: %w", a.Host.Name, err)
		}
	}
	return nil
}
