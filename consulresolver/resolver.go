// Package consulresolver lets a grpc-go client resolve a service straight
// from Consul, without a load balancer in the path:
//
//	conn, err := grpc.NewClient("consul://127.0.0.1:8500/greeter?tag=blue",
//		grpc.WithResolvers(consulresolver.NewBuilder(logger)),
//		grpc.WithDefaultServiceConfig(consulresolver.RoundRobin), ...)
//
// The agent address is the target's host (empty: CONSUL_HTTP_ADDR, then
// 127.0.0.1:8500), the service its path, and an optional tag and datacenter
// its query (?tag=blue&dc=dc1). Addresses come from blocking health queries
// for passing instances, so a drained instance leaves the balancer as soon as
// Consul says it is no longer passing.
package consulresolver

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc/resolver"

	"github.com/lbctl/lbctl/catalog"
)

// Scheme is the target scheme this package resolves.
const Scheme = "consul"

// RoundRobin is a service config that spreads calls over every resolved address.
const RoundRobin = `{"loadBalancingConfig":[{"round_robin":{}}]}`

// NewBuilder returns a resolver builder for consul:// targets.
func NewBuilder(log *slog.Logger) resolver.Builder { return &builder{log: log} }

type builder struct{ log *slog.Logger }

func (b *builder) Scheme() string { return Scheme }

// Build starts watching the target's service and feeds cc every change.
func (b *builder) Build(target resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	agent, q, err := parseTarget(target)
	if err != nil {
		return nil, err
	}
	client, err := api.NewClient(&api.Config{Address: agent})
	if err != nil {
		return nil, fmt.Errorf("consul resolver: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &consulResolver{cancel: cancel, done: make(chan struct{})}
	w := catalog.NewWatcher(client, []catalog.Query{q}, b.log)
	w.OnError = func(_ catalog.Query, err error) { cc.ReportError(err) }
	go r.feed(ctx, w, q, cc)
	return r, nil
}

// parseTarget reads consul://AGENT/SERVICE?tag=T&dc=D.
func parseTarget(t resolver.Target) (string, catalog.Query, error) {
	u := t.URL
	service := strings.Trim(u.Path, "/")
	if service == "" || strings.Contains(service, "/") {
		return "", catalog.Query{}, fmt.Errorf("consul resolver: target %q: want consul://agent/service", u.String())
	}
	agent := u.Host
	if agent == "" {
		agent = os.Getenv("CONSUL_HTTP_ADDR")
	}
	if agent == "" {
		agent = "127.0.0.1:8500"
	}
	q := catalog.Query{Service: service, Tag: u.Query().Get("tag"), Datacenter: u.Query().Get("dc")}
	return agent, q, nil
}

type consulResolver struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func (r *consulResolver) feed(ctx context.Context, w *catalog.Watcher, q catalog.Query, cc resolver.ClientConn) {
	defer close(r.done)
	snaps := make(chan catalog.Snapshot, 1)
	go w.Run(ctx, snaps)
	for {
		select {
		case <-ctx.Done():
			return
		case s := <-snaps:
			cc.UpdateState(resolver.State{Addresses: addressesOf(s.Instances[q])})
		}
	}
}

// addressesOf keeps instances with an IP address and a valid port.
func addressesOf(instances []catalog.Instance) []resolver.Address {
	var out []resolver.Address
	for _, in := range instances {
		ip, err := netip.ParseAddr(in.Address)
		if err != nil || in.Port < 1 || in.Port > 65535 {
			continue
		}
		out = append(out, resolver.Address{Addr: net.JoinHostPort(ip.String(), strconv.Itoa(in.Port)), ServerName: in.ID})
	}
	return out
}

// ResolveNow is a no-op: blocking queries already deliver every change.
func (r *consulResolver) ResolveNow(resolver.ResolveNowOptions) {}

// Close stops the watch and waits for it.
func (r *consulResolver) Close() {
	r.cancel()
	<-r.done
}
