package hosts

import (
	"strconv"
	"strings"
	"syscall"
)

// Faults. Each one is logged (Net.Event) before it is done.

// Kill kills p with SIGKILL (its process group: what kill -9 of a container's
// main process does to what it started).
func (p *Proc) Kill() {
	p.Host.net.Event("FAULT kill -9 %s on %s (pid %d)", p.Name, p.Host.Name, p.PID())
	syscall.Kill(-p.PID(), syscall.SIGKILL)
	<-p.exited
}

// PowerOff stops the whole host as a power cut would: every process on it is
// killed and its link goes down, so its peers get no answer at all (not even
// a refused connection).
func (h *Host) PowerOff() {
	h.net.Event("FAULT power off %s (%s): kill -9 everything, link down", h.Name, h.IP)
	h.net.must("ip", "-n", h.NS, "link", "set", "eth0", "down")
	h.killAll()
	h.mu.Lock()
	h.down = true
	h.mu.Unlock()
}

// PowerOn brings a powered-off host's link back; its processes are the caller's to start again.
func (h *Host) PowerOn() {
	h.net.Event("HEAL power on %s", h.Name)
	h.net.must("ip", "-n", h.NS, "link", "set", "eth0", "up")
	h.mu.Lock()
	h.down = false
	h.mu.Unlock()
}

// Isolate cuts h off from every other host: iptables DROP of everything in
// and out of eth0, inside h's namespace (loopback still works, so h's own
// processes still reach each other). Its peers see silence; h's own sends fail
// at once (a DROP in OUTPUT returns EPERM to the sender).
func (h *Host) Isolate() {
	h.net.Event("FAULT cut %s off from every host (iptables DROP both ways)", h.Name)
	h.iptables("-A", "INPUT", "-i", "eth0", "-j", "DROP")
	h.iptables("-A", "OUTPUT", "-o", "eth0", "-j", "DROP")
}

// RefuseOutgoing makes every TCP connection h opens to port on another host
// fail at once (iptables REJECT with a TCP reset in h's OUTPUT): h, say a
// load balancer, can no longer reach the instances listening there, while
// every other host still can.
func (h *Host) RefuseOutgoing(port int) {
	h.net.Event("FAULT %s's connections to port %d refused (iptables REJECT, tcp-reset)", h.Name, port)
	h.iptables("-A", "OUTPUT", "-o", "eth0", "-p", "tcp", "--dport", strconv.Itoa(port), "-j", "REJECT", "--reject-with", "tcp-reset")
}

// consulPorts are Consul's server RPC, LAN and WAN gossip ports.
const consulPorts = "8300:8302"

// CutFromConsul cuts h off from the Consul cluster only: its agent can reach
// no server and no other agent (gossip and RPC dropped both ways), while h's
// other traffic (gRPC to the apps, clients to its nginx) still flows.
func (h *Host) CutFromConsul() {
	h.net.Event("FAULT cut %s off from the Consul cluster (iptables DROP of ports %s both ways)", h.Name, consulPorts)
	for _, proto := range []string{"tcp", "udp"} {
		for _, dir := range []string{"--dport", "--sport"} {
			h.iptables("-A", "INPUT", "-i", "eth0", "-p", proto, dir, consulPorts, "-j", "DROP")
			h.iptables("-A", "OUTPUT", "-o", "eth0", "-p", proto, dir, consulPorts, "-j", "DROP")
		}
	}
}

// Heal removes every cut on h.
func (h *Host) Heal() {
	h.net.Event("HEAL %s: iptables rules flushed", h.Name)
	h.iptables("-F", "INPUT")
	h.iptables("-F", "OUTPUT")
}

func (h *Host) iptables(args ...string) {
	h.net.t.Helper()
	h.net.must(append([]string{"ip", "netns", "exec", h.NS, "iptables", "-w"}, args...)...)
}

// Rules are h's iptables rules (iptables -S), for failure messages.
func (h *Host) Rules() string {
	out, _ := run("ip", "netns", "exec", h.NS, "iptables", "-S")
	return strings.TrimSpace(out)
}
