package config

import (
	"fmt"
	"net"
	"regexp"
	"strconv"
	"time"
)

// Service is one gRPC service rendered by the built-in template: an upstream
// of its passing instances and a server block that grpc_passes to it.
type Service struct {
	// Name is the Consul service name.
	Name string `yaml:"name"`
	// Tag keeps only instances carrying this tag (blue, green...).
	Tag string `yaml:"tag"`
	// Listen is where nginx accepts calls: a port ("5000") or address:port.
	Listen string `yaml:"listen"`
	// Datacenter to take instances from; empty is the agent's own.
	Datacenter string `yaml:"datacenter"`
	// Keepalive is how many idle connections each nginx worker keeps to the upstream.
	Keepalive int `yaml:"keepalive"`
	// KeepaliveTimeout closes idle upstream connections after this long.
	KeepaliveTimeout time.Duration `yaml:"keepalive_timeout"`
	// ConnectTimeout bounds connecting to an instance (grpc_connect_timeout).
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// ReadTimeout and SendTimeout bound gaps between reads and writes on a call;
	// long server streams need them long (grpc_read_timeout, grpc_send_timeout).
	ReadTimeout time.Duration `yaml:"read_timeout"`
	SendTimeout time.Duration `yaml:"send_timeout"`
	// TLS terminates TLS at nginx for this listener.
	TLS *ListenTLS `yaml:"tls"`
	// UpstreamTLS talks TLS to the instances (grpcs://).
	UpstreamTLS bool `yaml:"upstream_tls"`
	// Shift makes the service follow `lbctl shift`: while Consul KV holds a
	// split for it (lbctl/shift/<name>), the upstream holds the passing
	// instances of the split's two tags, weighted by the split; otherwise the
	// instances tagged Tag (all instances when Tag is empty).
	Shift bool `yaml:"shift"`
	// AccessLog is where nginx logs this service's calls as JSON lines, which
	// lbctl run tails for the error rates lbctl shift gates on. Services may
	// share one file. Empty: not logged.
	AccessLog string `yaml:"access_log"`
}

// ListenTLS is a certificate and key for a TLS listener.
type ListenTLS struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// UpstreamName is the name of the service's nginx upstream block.
func (s Service) UpstreamName() string {
	n := "grpc_" + s.Name
	if s.Tag != "" {
		n += "_" + s.Tag
	}
	return nonWord.ReplaceAllString(n, "_")
}

// ListenAddr is Listen as nginx's listen directive takes it.
func (s Service) ListenAddr() string { return s.Listen }

var (
	nonWord = regexp.MustCompile(`[^A-Za-z0-9_]`)
	// Consul service names and tags that can be put in a config.
	safeName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	// Paths printed into nginx config unquoted.
	safeLogPath = regexp.MustCompile(`^/[A-Za-z0-9._/-]+$`)
)

// SetDefaultsForTest fills defaults on a Service built in code rather than
// loaded (benchmarks and tests outside this package).
func (s *Service) SetDefaultsForTest() { s.setDefaults() }

func (s *Service) setDefaults() {
	if s.Keepalive == 0 {
		s.Keepalive = 32
	}
	if s.KeepaliveTimeout == 0 {
		s.KeepaliveTimeout = 60 * time.Second
	}
	if s.ConnectTimeout == 0 {
		s.ConnectTimeout = 2 * time.Second
	}
	if s.ReadTimeout == 0 {
		s.ReadTimeout = time.Hour
	}
	if s.SendTimeout == 0 {
		s.SendTimeout = time.Hour
	}
}

func validateServices(services []Service, report reporter) {
	listens := map[string]int{}
	for i, s := range services {
		at := func(key string) string { return fmt.Sprintf("services[%d].%s", i, key) }
		if !safeName.MatchString(s.Name) {
			report(at("name"), "want a Consul service name (letters, digits, '.', '_', '-'), got %q", s.Name)
		}
		if s.Tag != "" && !safeName.MatchString(s.Tag) {
			report(at("tag"), "want a tag of letters, digits, '.', '_', '-', got %q", s.Tag)
		}
		if err := checkListen(s.Listen); err != nil {
			report(at("listen"), "%v", err)
		} else if j, dup := listens[s.Listen]; dup {
			report(at("listen"), "%s is already used by services[%d]", s.Listen, j)
		} else {
			listens[s.Listen] = i
		}
		if s.Keepalive < 0 {
			report(at("keepalive"), "must not be negative")
		}
		if s.AccessLog != "" && !safeLogPath.MatchString(s.AccessLog) {
			report(at("access_log"), "want an absolute path of letters, digits, '.', '_', '-', '/', got %q", s.AccessLog)
		}
		if s.TLS != nil && (s.TLS.Cert == "" || s.TLS.Key == "") {
			report(at("tls"), "needs both cert and key")
		}
	}
}

// checkListen accepts "PORT", "HOST:PORT" and "[IPv6]:PORT".
func checkListen(listen string) error {
	if listen == "" {
		return fmt.Errorf("required: a port such as 5000, or address:port")
	}
	port := listen
	if host, p, err := net.SplitHostPort(listen); err == nil {
		if net.ParseIP(host) == nil && !safeName.MatchString(host) {
			return fmt.Errorf("address %q is not an IP or host name", host)
		}
		port = p
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("want a port 1-65535 or address:port, got %q", listen)
	}
	return nil
}
