package render

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"text/template"
	"time"

	"github.com/lbctl/lbctl/catalog"
	"github.com/lbctl/lbctl/config"
	"github.com/lbctl/lbctl/internal/trafficsplit"
	"github.com/lbctl/lbctl/live"
	"github.com/lbctl/lbctl/templates"
)

var builtinTemplate = template.Must(template.New("grpc.conf.tmpl").Parse(templates.GRPC))

// Problem is an instance (or one of its values) left out of the config, and why.
type Problem struct {
	Service    string
	InstanceID string
	Reason     string
}

func (p Problem) String() string {
	return fmt.Sprintf("%s instance %q: %s", p.Service, p.InstanceID, p.Reason)
}

// Resolver turns a host name into IP addresses. Host names are resolved by
// lbctl, not nginx, so one unresolvable registration leaves out that instance
// instead of failing nginx -t for the whole config.
type Resolver func(host string) ([]string, error)

// SystemResolver resolves with the system resolver, each lookup bounded by timeout.
func SystemResolver(timeout time.Duration) Resolver {
	return func(host string) ([]string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		return net.DefaultResolver.LookupHost(ctx, host)
	}
}

// Weights in service meta ("weight") must be a small integer.
const (
	maxWeight  = 100
	weightMeta = "weight"
)

// Builtin renders the built-in gRPC template for services from snap. Every
// address, port and weight is checked first; whatever fails is left out and
// returned as a Problem (for a log line), so no registered value can add an
// nginx directive. The same snapshot always gives the same bytes.
func Builtin(services []config.Service, snap catalog.Snapshot, resolve Resolver) ([]byte, []Problem) {
	return NewBuiltinRenderer(resolve).Render(services, snap)
}

// BuiltinRenderer is Builtin with memory: a service whose config and
// instances are unchanged since the last render reuses its rendered block,
// so one change among thousands of services renders one block.
type BuiltinRenderer struct {
	resolve Resolver
	live    *Live          // nil: reload mode
	blocks  []*cachedBlock // by position in the services list
	// file is the last file rendered, with its header; callers never change it.
	file       []byte
	fileHeader header
	liveHTTP   string // live.HTTPConfig of live, once
}

// Live is where nginx takes live upstreams (config nginx.live_*): its
// push socket, the seed file it loads at start and its shared memory size.
type Live struct{ Socket, Seed, Memory string }

// LiveOf is cfg's live upstreams target, nil when they are off.
func LiveOf(n config.Nginx) *Live {
	if !n.LiveUpstreams {
		return nil
	}
	return &Live{Socket: n.LiveSocket(), Seed: n.LiveSeed(), Memory: n.LiveMemory}
}

type cachedBlock struct {
	svc       config.Service
	split     splitView // zero without a split
	instances []catalog.Instance
	out       []byte
	// upstreamName and upstream are, in live mode, the upstream's name and
	// what nginx balances over (its version computed once per change).
	upstreamName string
	upstream     live.Upstream
	problems     []Problem
}

// NewBuiltinRenderer returns a renderer that resolves host names with resolve.
func NewBuiltinRenderer(resolve Resolver) *BuiltinRenderer {
	return &BuiltinRenderer{resolve: resolve}
}

// NewLiveRenderer renders for live upstreams: each upstream once, as nginx's
// Lua balancer over the data RenderLive returns, so the bytes change only
// when the config does, never with the instances.
func NewLiveRenderer(resolve Resolver, target Live) *BuiltinRenderer {
	r := NewBuiltinRenderer(resolve)
	r.live = &target
	r.liveHTTP = live.HTTPConfig(target.Socket, target.Seed, target.Memory)
	return r
}

// Render is Builtin, reusing blocks rendered last time where nothing changed.
func (r *BuiltinRenderer) Render(services []config.Service, snap catalog.Snapshot) ([]byte, []Problem) {
	return r.RenderSplits(services, snap, nil)
}

// RenderSplits is Render for services some of which follow traffic splits
// (config shift: true), splits being the valid ones by service (package
// shift). A service without a split renders as Render does.
func (r *BuiltinRenderer) RenderSplits(services []config.Service, snap catalog.Snapshot, splits map[string]trafficsplit.Split) ([]byte, []Problem) {
	out, _, problems := r.RenderLive(services, snap, splits)
	return out, problems
}

// RenderLive is RenderSplits that also returns, in live mode, each
// upstream's peers for nginx's Lua balancer (nil in reload mode). The same
// checks apply: a value that fails them is in neither.
func (r *BuiltinRenderer) RenderLive(services []config.Service, snap catalog.Snapshot, splits map[string]trafficsplit.Split) ([]byte, live.Set, []Problem) {
	var problems []Problem
	next := make([]*cachedBlock, len(services))
	size := 0
	for i, svc := range services {
		b := r.block(i, svc, splitViewOf(svc, splits), snap.Instances[QueryOf(svc)])
		problems = append(problems, b.problems...)
		next[i] = b
		size += len(b.out)
	}
	prev := r.blocks
	r.blocks = next
	h := r.headerOf(services)
	if r.file == nil || h != r.fileHeader || !sameOutputs(prev, next) {
		// In live mode an instance change leaves every block's text as it
		// was: the file (~500 KB at 1,000 services) is not built again.
		var buf bytes.Buffer
		execute(&buf, "header", h)
		buf.Grow(size)
		for _, b := range next {
			buf.Write(b.out)
		}
		r.file, r.fileHeader = buf.Bytes(), h
	}
	return r.file, r.liveSet(next), problems
}

// sameOutputs says whether blocks a and b render the same text.
func sameOutputs(a, b []*cachedBlock) bool {
	return slices.EqualFunc(a, b, func(x, y *cachedBlock) bool { return x == y || bytes.Equal(x.out, y.out) })
}

// liveSet is every upstream's peers, in live mode.
func (r *BuiltinRenderer) liveSet(blocks []*cachedBlock) live.Set {
	if r.live == nil {
		return nil
	}
	set := make(live.Set, len(blocks))
	for _, b := range blocks {
		set[b.upstreamName] = b.upstream
	}
	return set
}

func (r *BuiltinRenderer) block(i int, svc config.Service, split *splitView, instances []catalog.Instance) *cachedBlock {
	var sv splitView
	if split != nil {
		sv = *split
	}
	if i < len(r.blocks) {
		if b := r.blocks[i]; b.svc == svc && b.split == sv && catalog.Equal(b.instances, instances) {
			return b
		}
	}
	data, problems, cacheable := serviceBlockOf(svc, split, instances, r.resolve)
	b := &cachedBlock{svc: svc, split: sv, instances: instances, upstreamName: data.Upstream, problems: problems}
	if r.live != nil {
		b.upstream = live.NewUpstream(peersOf(data.Servers))
		data.Live, data.Servers = true, nil // the config holds no instance
	}
	var buf bytes.Buffer
	execute(&buf, "service", data)
	b.out = buf.Bytes()
	if !cacheable {
		b.instances = nil // host names: resolve again next time
		b.svc.Name = ""
	}
	return b
}

func execute(buf *bytes.Buffer, name string, data any) {
	if err := builtinTemplate.ExecuteTemplate(buf, name, data); err != nil {
		// The template is fixed and its data pre-checked: failing here is a bug.
		panic(fmt.Sprintf("built-in template %s: %v", name, err))
	}
}

// QueryOf is the Consul health query behind a configured service. A service
// that follows shifts asks for every tag: the renderer picks the split's.
func QueryOf(s config.Service) catalog.Query {
	if s.Shift {
		return catalog.Query{Service: s.Name, Datacenter: s.Datacenter}
	}
	return catalog.Query{Service: s.Name, Tag: s.Tag, Datacenter: s.Datacenter}
}

// header is the file's first lines: the access log format when any service
// logs, and in live mode the Lua balancer's shared memory, code and push socket.
type header struct {
	AccessLog bool
	Live      string
}

func (r *BuiltinRenderer) headerOf(services []config.Service) header {
	h := header{AccessLog: slices.ContainsFunc(services, func(s config.Service) bool { return s.AccessLog != "" })}
	h.Live = r.liveHTTP
	return h
}

// peersOf is the checked servers as live upstream peers.
func peersOf(servers []upstreamServer) []live.Peer {
	peers := make([]live.Peer, 0, len(servers))
	for _, s := range servers {
		peers = append(peers, live.Peer{Host: s.IP, Port: s.Port, Weight: s.Weight, ID: s.ID})
	}
	return peers
}

type serviceBlock struct {
	Name, Tag, Upstream, Listen string
	Servers                     []upstreamServer
	Keepalive                   int
	KeepaliveTimeout            string
	ConnectTimeout              string
	ReadTimeout, SendTimeout    string
	TLS                         *config.ListenTLS
	UpstreamTLS                 bool
	AccessLog                   string
	Split                       *splitView
	// Live renders the upstream as nginx's Lua balancer, without servers.
	Live bool
}

type upstreamServer struct {
	Addr   string // ip:port, [ipv6]:port
	IP     string
	Port   int
	Weight int
	ID     string // for a comment; empty unless it is plainly safe
	Tag    string // the split tag it serves for; empty without a split
}

// serviceBlockOf checks and sorts one service's instances into template data.
// cacheable is false when a host name was resolved: its answer may change.
func serviceBlockOf(svc config.Service, split *splitView, instances []catalog.Instance, resolve Resolver) (block serviceBlock, problems []Problem, cacheable bool) {
	if split != nil {
		copied := *split
		split = &copied // applySplit adds a note
	}
	block = serviceBlock{
		Name: svc.Name, Tag: svc.Tag, Upstream: svc.UpstreamName(), Listen: svc.ListenAddr(),
		Keepalive: svc.Keepalive, KeepaliveTimeout: nginxDuration(svc.KeepaliveTimeout),
		ConnectTimeout: nginxDuration(svc.ConnectTimeout),
		ReadTimeout:    nginxDuration(svc.ReadTimeout), SendTimeout: nginxDuration(svc.SendTimeout),
		TLS: svc.TLS, UpstreamTLS: svc.UpstreamTLS, AccessLog: svc.AccessLog, Split: split,
	}
	sorted := slices.Clone(instances)
	catalog.SortInstances(sorted)
	sorted, tags, problems := selectInstances(svc, split, sorted)
	cacheable = true
	seen := map[string]bool{}
	for n, in := range sorted {
		if _, err := netip.ParseAddr(in.Address); err != nil {
			cacheable = false
		}
		servers, probs := upstreamServersOf(svc.Name, in, resolve)
		problems = append(problems, probs...)
		for _, s := range servers {
			if seen[s.Addr] {
				problems = append(problems, Problem{svc.Name, in.ID, "duplicate of an earlier instance at " + s.Addr + "; left out"})
				continue
			}
			seen[s.Addr] = true
			s.Tag = tags[n]
			block.Servers = append(block.Servers, s)
		}
	}
	if split != nil {
		block.Servers = applySplit(block.Servers, split)
	}
	return block, problems, cacheable
}

// upstreamServersOf checks one instance and turns it into upstream servers:
// one per address its host resolves to.
func upstreamServersOf(service string, in catalog.Instance, resolve Resolver) ([]upstreamServer, []Problem) {
	problem := func(reason string) Problem { return Problem{service, in.ID, reason} }
	if err := CheckPort(in.Port); err != nil {
		return nil, []Problem{problem(err.Error() + "; instance left out")}
	}
	ips, err := addressIPs(in.Address, resolve)
	if err != nil {
		return nil, []Problem{problem(err.Error() + "; instance left out")}
	}
	weight, problems := weightOf(in, problem)
	id := ""
	if safeComment.MatchString(in.ID) {
		id = in.ID
	}
	servers := make([]upstreamServer, 0, len(ips))
	for _, ip := range ips {
		servers = append(servers, upstreamServer{Addr: net.JoinHostPort(ip, strconv.Itoa(in.Port)), IP: ip, Port: in.Port, Weight: weight, ID: id})
	}
	return servers, problems
}

// addressIPs accepts what CheckAddress does: an IP literal, or a host name
// (resolved to its IPs, sorted).
func addressIPs(addr string, resolve Resolver) ([]string, error) {
	if err := CheckAddress(addr); err != nil {
		return nil, fmt.Errorf("address %w", err)
	}
	if isIP(addr) {
		return []string{netip.MustParseAddr(addr).Unmap().String()}, nil
	}
	if resolve == nil {
		return nil, fmt.Errorf("host name %q cannot be resolved here", addr)
	}
	found, err := resolve(addr)
	if err != nil {
		return nil, fmt.Errorf("host name %q does not resolve: %v", addr, err)
	}
	var ips []string
	for _, f := range found {
		if ip, err := netip.ParseAddr(f); err == nil && ip.Zone() == "" {
			ips = append(ips, ip.Unmap().String())
		}
	}
	if len(ips) == 0 {
		return nil, fmt.Errorf("host name %q resolves to no IP address", addr)
	}
	slices.Sort(ips)
	return slices.Compact(ips), nil
}

// weightOf reads meta "weight": absent means 1; anything but an integer
// 1-100 is left out (weight 1) and reported.
func weightOf(in catalog.Instance, problem func(string) Problem) (int, []Problem) {
	raw, ok := in.Meta[weightMeta]
	if !ok {
		return 1, nil
	}
	w, err := strconv.Atoi(raw)
	if err != nil || w < 1 || w > maxWeight {
		return 1, []Problem{problem(fmt.Sprintf("meta weight %q is not an integer 1-%d; weight 1 used", raw, maxWeight))}
	}
	return w, nil
}

// safeComment is the built-in template's own, narrower rule for the one
// value it prints in a comment (a service ID): a plain ID, not merely free
// of nginx syntax (CheckPlain), so the comment reads the same everywhere.
var safeComment = regexp.MustCompile(`^[A-Za-z0-9._:@-]{1,128}$`)

// nginxDuration writes d in nginx's time syntax ("60s", "1500ms").
func nginxDuration(d time.Duration) string {
	if d%time.Second == 0 {
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	}
	return strconv.FormatInt(d.Milliseconds(), 10) + "ms"
}
