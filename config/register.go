package config

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// Register is a service registration with the local Consul agent: what
// `lbctl register` registers for an app, and what `lbctl run` registers for
// the load balancer itself when the register: section is present.
type Register struct {
	// Name is the Consul service name.
	Name string `yaml:"name"`
	// ID is the instance ID; empty means name-hostname-port.
	ID string `yaml:"id"`
	// Address is the address other hosts reach the instance at; empty means
	// the container's first non-loopback IPv4 address.
	Address string `yaml:"address"`
	// Port is the instance's port.
	Port int `yaml:"port"`
	// Tags are the Consul tags (blue, green...).
	Tags []string `yaml:"tags"`
	// Meta is the Consul service meta (version...).
	Meta map[string]string `yaml:"meta"`
	// Weight, 1-100, is the instance's share of calls; 0 leaves it unset
	// (load balancers use 1). It is registered as meta "weight".
	Weight int `yaml:"weight"`
	// Check is the health check Consul runs (or lbctl heartbeats).
	Check RegisterCheck `yaml:"check"`
	// Drain is what happens on shutdown before the app is stopped.
	Drain RegisterDrain `yaml:"drain"`
}

// RegisterCheck is the health check of a registration.
type RegisterCheck struct {
	// Type is grpc, http, tcp or ttl (lbctl sends the heartbeats).
	Type string `yaml:"type"`
	// GRPCService is the service name asked of grpc.health.v1; empty asks about the server.
	GRPCService string `yaml:"grpc_service"`
	// HTTPPath is the path (or full URL) an http check GETs.
	HTTPPath string `yaml:"http_path"`
	// Interval is how often Consul runs the check.
	Interval time.Duration `yaml:"interval"`
	// Timeout bounds one run of the check.
	Timeout time.Duration `yaml:"timeout"`
	// TTL is how long a ttl check stays passing without a heartbeat.
	TTL time.Duration `yaml:"ttl"`
	// DeregisterCriticalAfter removes the instance once its check has been
	// critical this long (Consul's DeregisterCriticalServiceAfter); 0 never does.
	DeregisterCriticalAfter time.Duration `yaml:"deregister_critical_after"`
}

// RegisterDrain is the shutdown sequence's first step and its bound.
type RegisterDrain struct {
	// Mode is maintenance (the instance stays registered but critical) or
	// deregister (it is removed at once).
	Mode string `yaml:"mode"`
	// Timeout bounds the wait for load balancers to confirm; after it the
	// drain proceeds and says which ones did not confirm.
	Timeout time.Duration `yaml:"timeout"`
}

// Check types and drain modes a registration accepts.
var (
	CheckTypes = []string{"grpc", "http", "tcp", "ttl"}
	DrainModes = []string{"maintenance", "deregister"}
)

func (r *Register) setDefaults() {
	if r.Check.Type == "" {
		r.Check.Type = "grpc"
	}
	if r.Check.Type == "http" && r.Check.HTTPPath == "" {
		r.Check.HTTPPath = "/"
	}
	if r.Check.Interval == 0 {
		r.Check.Interval = 2 * time.Second
	}
	if r.Check.Timeout == 0 {
		r.Check.Timeout = time.Second
	}
	if r.Check.TTL == 0 {
		r.Check.TTL = 10 * time.Second
	}
	if r.Drain.Mode == "" {
		r.Drain.Mode = "maintenance"
	}
	if r.Drain.Timeout == 0 {
		r.Drain.Timeout = 30 * time.Second
	}
}

func (r *Register) validate(at string, report reporter) {
	if !safeName.MatchString(r.Name) {
		report(at+".name", "want a Consul service name (letters, digits, '.', '_', '-'), got %q", r.Name)
	}
	if r.ID != "" && !safeName.MatchString(r.ID) {
		report(at+".id", "want an ID of letters, digits, '.', '_', '-', got %q", r.ID)
	}
	if r.Port < 1 || r.Port > 65535 {
		report(at+".port", "want a port 1-65535, got %d", r.Port)
	}
	for _, tag := range r.Tags {
		if !safeName.MatchString(tag) {
			report(at+".tags", "want tags of letters, digits, '.', '_', '-', got %q", tag)
		}
	}
	if _, ok := r.Meta["weight"]; ok {
		report(at+".meta", "set the weight with weight:, not meta")
	}
	if r.Weight < 0 || r.Weight > 100 {
		report(at+".weight", "want 1-100 (or 0 to leave it unset), got %d", r.Weight)
	}
	r.Check.validate(at+".check", report)
	if !slices.Contains(DrainModes, r.Drain.Mode) {
		report(at+".drain.mode", "want one of %v, got %q", DrainModes, r.Drain.Mode)
	}
	if r.Drain.Timeout < 0 {
		report(at+".drain.timeout", "must not be negative")
	}
}

func (c *RegisterCheck) validate(at string, report reporter) {
	if !slices.Contains(CheckTypes, c.Type) {
		report(at+".type", "want one of %v, got %q", CheckTypes, c.Type)
	}
	if c.Interval < time.Millisecond {
		report(at+".interval", "want at least 1ms, got %s", c.Interval)
	}
	if c.Timeout < time.Millisecond {
		report(at+".timeout", "want at least 1ms, got %s", c.Timeout)
	}
	if c.TTL < time.Second {
		report(at+".ttl", "want at least 1s, got %s", c.TTL)
	}
	if c.DeregisterCriticalAfter < 0 {
		report(at+".deregister_critical_after", "must not be negative")
	}
}

// DefaultRegister is a registration with every default filled, the base that
// command-line flags and environment variables are applied to.
func DefaultRegister() Register {
	var r Register
	r.setDefaults()
	return r
}

// Validate checks a registration that did not come from a config file
// (flags, environment); errors name the keys as register.port, register.check.type.
func (r *Register) Validate() error {
	var errs []error
	r.validate("register", func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
	})
	return errors.Join(errs...)
}
