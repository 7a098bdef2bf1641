// Package registrar registers one service instance with the local Consul
// agent and keeps it registered: retries with capped, jittered backoff until
// the agent takes it, re-registers within seconds when the agent loses it
// (an agent restarted without its data), heartbeats ttl checks, and on
// shutdown takes the instance out of load balancing and reports the Consul
// index at which it did, for lbstate.Waiter to wait on.
package registrar

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/lbctl/lbctl/config"
)

// WeightMeta is the service meta key load balancers read an instance's weight from.
const WeightMeta = "weight"

// Service is one instance to register. Build it with ServiceFromConfig or by
// hand, then fill the defaults with Complete.
type Service struct {
	Name    string
	ID      string
	Address string
	Port    int
	Tags    []string
	Meta    map[string]string
	// Weight 1-100 goes into Meta["weight"] and Consul's passing weight; 0 leaves it unset.
	Weight int
	Check  Check
}

// Check is the instance's health check.
type Check struct {
	// Type is grpc, http, tcp or ttl.
	Type string
	// GRPCService is asked of grpc.health.v1 (grpc checks); empty asks about the server.
	GRPCService string
	// HTTPPath is a path, or a full http(s) URL (http checks).
	HTTPPath string
	Interval time.Duration
	Timeout  time.Duration
	// TTL is a ttl check's lifetime without a heartbeat; lbctl heartbeats every TTL/3.
	TTL time.Duration
	// DeregisterCriticalAfter is Consul's DeregisterCriticalServiceAfter (Consul's minimum is 1m); 0 is never.
	DeregisterCriticalAfter time.Duration
}

// ServiceFromConfig is the registration a config's register: section describes.
func ServiceFromConfig(r config.Register) Service {
	return Service{
		Name: r.Name, ID: r.ID, Address: r.Address, Port: r.Port,
		Tags: slices.Clone(r.Tags), Meta: maps.Clone(r.Meta), Weight: r.Weight,
		Check: Check{
			Type: r.Check.Type, GRPCService: r.Check.GRPCService, HTTPPath: r.Check.HTTPPath,
			Interval: r.Check.Interval, Timeout: r.Check.Timeout, TTL: r.Check.TTL,
			DeregisterCriticalAfter: r.Check.DeregisterCriticalAfter,
		},
	}
}

// Host is what Complete needs to know about the machine it runs on; tests
// inject fixed answers.
type Host struct {
	// Hostname is os.Hostname.
	Hostname func() (string, error)
	// InterfaceAddrs is net.InterfaceAddrs.
	InterfaceAddrs func() ([]net.Addr, error)
}

// Complete fills the ID (name-hostname-port) and Address (the first
// non-loopback IPv4 address) when they are empty, and validates the result.
func (s Service) Complete(h Host) (Service, error) {
	if s.Address == "" {
		addrs, err := h.InterfaceAddrs()
		if err != nil {
			return s, fmt.Errorf("find this host's address: %w", err)
		}
		if s.Address, err = FirstNonLoopbackIPv4(addrs); err != nil {
			return s, err
		}
	}
	if s.ID == "" {
		host, err := h.Hostname()
		if err != nil {
			return s, fmt.Errorf("find the hostname for the service ID: %w", err)
		}
		s.ID = fmt.Sprintf("%s-%s-%d", s.Name, host, s.Port)
	}
	return s, s.Validate()
}

// SystemHost answers from the real machine.
func SystemHost() Host { return Host{Hostname: os.Hostname, InterfaceAddrs: net.InterfaceAddrs} }

var hostName = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$`)

// ErrNoAddress means the host has no non-loopback IPv4 address to register.
var ErrNoAddress = errors.New("no non-loopback IPv4 address on this host; set the address")

// FirstNonLoopbackIPv4 picks the address to register from the host's
// interface addresses.
func FirstNonLoopbackIPv4(addrs []net.Addr) (string, error) {
	for _, a := range addrs {
		var ip net.IP
		switch v := a.(type) {
		case *net.IPNet:
			ip = v.IP
		case *net.IPAddr:
			ip = v.IP
		}
		if ip4 := ip.To4(); ip4 != nil && !ip4.IsLoopback() && !ip4.IsUnspecified() {
			return ip4.String(), nil
		}
	}
	return "", ErrNoAddress
}

// Validate reports everything wrong with a completed Service.
func (s Service) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if s.Name == "" {
		bad("service name: required")
	}
	if s.ID == "" {
		bad("service ID: required")
	}
	if net.ParseIP(s.Address) == nil && !hostName.MatchString(s.Address) {
		bad("address %q: want an IP or host name", s.Address)
	}
	if s.Port < 1 || s.Port > 65535 {
		bad("port %d: want 1-65535", s.Port)
	}
	if s.Weight < 0 || s.Weight > 100 {
		bad("weight %d: want 1-100, or 0 to leave it unset", s.Weight)
	}
	if _, ok := s.Meta[WeightMeta]; ok && s.Weight != 0 {
		bad("meta %q and weight both set: set only the weight", WeightMeta)
	}
	if err := s.Check.validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (c Check) validate() error {
	if !slices.Contains(config.CheckTypes, c.Type) {
		return fmt.Errorf("check type %q: want one of %s", c.Type, strings.Join(config.CheckTypes, ", "))
	}
	if c.Type == "ttl" && c.TTL < time.Second {
		return fmt.Errorf("check ttl %s: want at least 1s", c.TTL)
	}
	if c.Type != "ttl" && (c.Interval <= 0 || c.Timeout <= 0) {
		return fmt.Errorf("check interval %s and timeout %s: both must be positive", c.Interval, c.Timeout)
	}
	return nil
}

// CheckID is the ID of the instance's own check, "service:<id>" as Consul
// names a service's first check.
func (s Service) CheckID() string { return "service:" + s.ID }

// registration is the agent API payload for s.
func (s Service) registration() *api.AgentServiceRegistration {
	meta := maps.Clone(s.Meta)
	var weights *api.AgentWeights
	if s.Weight > 0 {
		if meta == nil {
			meta = map[string]string{}
		}
		meta[WeightMeta] = strconv.Itoa(s.Weight)
		weights = &api.AgentWeights{Passing: s.Weight, Warning: 1}
	}
	return &api.AgentServiceRegistration{
		ID: s.ID, Name: s.Name, Address: s.Address, Port: s.Port,
		Tags: slices.Clone(s.Tags), Meta: meta, Weights: weights,
		Check: s.agentCheck(),
	}
}

func (s Service) agentCheck() *api.AgentServiceCheck {
	hostPort := net.JoinHostPort(s.Address, strconv.Itoa(s.Port))
	c := &api.AgentServiceCheck{
		CheckID: s.CheckID(),
		Name:    fmt.Sprintf("%s %s check", s.Name, s.Check.Type),
	}
	if s.Check.DeregisterCriticalAfter > 0 {
		c.DeregisterCriticalServiceAfter = s.Check.DeregisterCriticalAfter.String()
	}
	switch s.Check.Type {
	case "ttl":
		c.TTL = s.Check.TTL.String()
		return c
	case "grpc":
		c.GRPC = hostPort
		if s.Check.GRPCService != "" {
			c.GRPC += "/" + s.Check.GRPCService
		}
	case "http":
		c.HTTP = httpCheckURL(hostPort, s.Check.HTTPPath)
	case "tcp":
		c.TCP = hostPort
	}
	c.Interval, c.Timeout = s.Check.Interval.String(), s.Check.Timeout.String()
	return c
}

func httpCheckURL(hostPort, path string) string {
	if strings.HasPrefix(path, "http://") || strings.HasPrefix(path, "https://") {
		return path
	}
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	return "http://" + hostPort + path
}
