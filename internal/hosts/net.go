// Package hosts runs lbctl's many-hosts tests: each host is a Linux network
// namespace with its own address on a private bridge, and runs real
// processes (Consul servers and client agents, `lbctl run` + nginx, `lbctl
// register -- greeter-server`). The test can kill a process, stop a whole
// host, cut a host off and heal it; every fault is logged with a timestamp.
//
// Nothing is created in the machine's own network namespace: the bridge
// lives in a namespace of its own (the "switch"), each host's veth has its
// peer there, and no namespace has a route off the bridge or any NAT, so no
// traffic leaves the test's hosts. Every namespace is named lbh<pid>-..., so a
// later run deletes what a killed run left (see removeLeftovers).
//
// It needs root (ip netns, iptables inside the namespaces): New skips the test
// otherwise.
package hosts

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// Subnet is the hosts' /24. Every test has its own switch namespace, so
// concurrent tests may share it: the addresses never meet.
const Subnet = "10.211.0"

// Net is one test's set of hosts on one bridge.
type Net struct {
	t     testing.TB
	id    string // lbh<pid>-<n>: prefix of every namespace
	dir   string
	start time.Time

	mu    sync.Mutex
	hosts []*Host
	// figures, when set, is printed beside each logged event (the load so far).
	figures func() string
}

var netSeq atomic.Int64

// nsRe matches the namespaces this package creates; group 1 is the owning pid.
var nsRe = regexp.MustCompile(`^lbh(\d+)-\d+-`)

// New makes the switch namespace with its bridge. Everything is removed when
// the test ends, passed or failed.
func New(t testing.TB) *Net {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("hosts: needs root for network namespaces and iptables (ip netns); run the tests as root, as CI does")
	}
	for _, tool := range []string{"ip", "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			msg := fmt.Sprintf("hosts: %s not found (run scripts/install-deps.sh)", tool)
			if os.Getenv("CI") != "" {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
	}
	removeLeftovers(t)
	n := &Net{t: t, id: fmt.Sprintf("lbh%d-%d", os.Getpid(), netSeq.Add(1)), dir: t.TempDir(), start: time.Now()}
	t.Cleanup(n.remove)
	sw := n.nsName("sw")
	n.must("ip", "netns", "add", sw)
	n.must("ip", "-n", sw, "link", "add", "br0", "type", "bridge")
	n.must("ip", "-n", sw, "link", "set", "br0", "up")
	n.must("ip", "-n", sw, "link", "set", "lo", "up")
	return n
}

func (n *Net) nsName(suffix string) string { return n.id + "-" + suffix }

// Dir is the test's work directory; each host has a folder in it.
func (n *Net) Dir() string { return n.dir }

// Host is one machine: a network namespace with one address on the bridge.
type Host struct {
	Name string // e.g. consul-1
	IP   string
	NS   string // namespace name (ip netns)
	Dir  string // its files: configs, data, logs

	net   *Net
	index int

	mu     sync.Mutex
	procs  []*Proc
	down   bool
	consul *api.Client
}

// AddHost makes a host: a namespace, a veth to the bridge, the next address
// of Subnet, loopback up. Hosts have no default route.
func (n *Net) AddHost(name string) *Host {
	n.t.Helper()
	n.mu.Lock()
	i := len(n.hosts) + 1
	h := &Host{Name: name, IP: fmt.Sprintf("%s.%d", Subnet, 10+i), NS: n.nsName(strconv.Itoa(i)), net: n, index: i,
		Dir: filepath.Join(n.dir, name)}
	n.hosts = append(n.hosts, h)
	n.mu.Unlock()
	if err := os.MkdirAll(h.Dir, 0o755); err != nil {
		n.t.Fatal(err)
	}
	sw := n.nsName("sw")
	port := fmt.Sprintf("p%d", i)
	n.must("ip", "netns", "add", h.NS)
	n.must("ip", "-n", sw, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", h.NS)
	n.must("ip", "-n", sw, "link", "set", port, "master", "br0", "up")
	n.must("ip", "-n", h.NS, "link", "set", "lo", "up")
	n.must("ip", "-n", h.NS, "addr", "add", h.IP+"/24", "dev", "eth0")
	n.must("ip", "-n", h.NS, "link", "set", "eth0", "up")
	return h
}

// Hosts are every host, in the order they were added.
func (n *Net) Hosts() []*Host {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]*Host(nil), n.hosts...)
}

// SetFigures makes every logged event carry f's text (e.g. the load
// generator's calls and failures so far); nil stops it.
func (n *Net) SetFigures(f func() string) {
	n.mu.Lock()
	n.figures = f
	n.mu.Unlock()
}

// Event logs what happened at +seconds since the net was made, with the figures beside it.
func (n *Net) Event(format string, args ...any) {
	n.t.Helper()
	n.mu.Lock()
	f := n.figures
	n.mu.Unlock()
	line := fmt.Sprintf("[+%7.3fs] %s", time.Since(n.start).Seconds(), fmt.Sprintf(format, args...))
	if f != nil {
		line += "  | " + f()
	}
	n.t.Log(line)
}

// Since is the time since the net was made (the clock of Event's log).
func (n *Net) Since() time.Duration { return time.Since(n.start) }

func (n *Net) must(args ...string) {
	n.t.Helper()
	if out, err := run(args...); err != nil {
		n.t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

func run(args ...string) (string, error) {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	return string(bytes.TrimSpace(out)), err
}

// remove kills every process left in the test's namespaces and deletes them.
func (n *Net) remove() {
	for _, h := range n.Hosts() {
		h.killAll()
	}
	for _, ns := range n.namespaces() {
		removeNamespace(ns)
	}
}

func (n *Net) namespaces() []string {
	var out []string
	for _, ns := range listNamespaces() {
		if strings.HasPrefix(ns, n.id+"-") {
			out = append(out, ns)
		}
	}
	return out
}

func listNamespaces() []string {
	out, err := run("ip", "netns", "list")
	if err != nil {
		return nil
	}
	var names []string
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	return names
}

// removeNamespace kills whatever still runs in ns (a namespace is only freed
// once its last process is gone) and deletes it.
func removeNamespace(ns string) {
	killPIDs(ns)
	run("ip", "netns", "del", ns)
}

func killPIDs(ns string) {
	out, _ := run("ip", "netns", "pids", ns)
	for _, f := range strings.Fields(out) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// removeLeftovers deletes the namespaces of earlier runs whose test process
// is gone (killed before its cleanup ran).
func removeLeftovers(t testing.TB) {
	for _, ns := range listNamespaces() {
		m := nsRe.FindStringSubmatch(ns)
		if m == nil {
			continue
		}
		pid, _ := strconv.Atoi(m[1])
		if pid == os.Getpid() || syscall.Kill(pid, 0) == nil {
			continue // ours, or a run still going
		}
		t.Logf("hosts: removing namespace %s left by an earlier run (pid %d is gone)", ns, pid)
		removeNamespace(ns)
	}
}
