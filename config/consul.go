package config

import (
	"log/slog"
	"net"
	"strconv"
	"strings"
)

// Consul is the connection to the Consul agent. Its fields follow Consul's own
// environment variables (see ConsulFromEnv); YAML overrides the environment
// and flags override YAML.
type Consul struct {
	// Address is host:port of the agent's HTTP API (CONSUL_HTTP_ADDR); a
	// scheme prefix (https://) is accepted.
	Address string `yaml:"address"`
	// SSL talks HTTPS to the agent (CONSUL_HTTP_SSL).
	SSL *bool `yaml:"ssl"`
	// Token is the ACL token (CONSUL_HTTP_TOKEN). It never appears in logs or errors.
	Token Secret `yaml:"token"`
	// TokenFile holds the ACL token (CONSUL_HTTP_TOKEN_FILE).
	TokenFile string `yaml:"token_file"`
	// CAFile verifies the agent's certificate (CONSUL_CACERT).
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are the client certificate (CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY).
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// TLSServerName is the name expected in the agent's certificate (CONSUL_TLS_SERVER_NAME).
	TLSServerName string `yaml:"tls_server_name"`
	// InsecureSkipVerify skips certificate verification (CONSUL_HTTP_SSL_VERIFY=false).
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
	// Datacenter to query; empty means the agent's own.
	Datacenter string `yaml:"datacenter"`
}

// Secret is a string that prints as "<redacted>" when set, so a token can
// never leak through %v, %s or a log attribute.
type Secret string

func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "<redacted>"
}

// LogValue keeps the secret out of slog output.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// Reveal returns the secret itself, for the one place that sends it to Consul.
func (s Secret) Reveal() string { return string(s) }

// ConsulFromEnv reads Consul's standard environment variables through lookup
// (os.LookupEnv in production). Unset variables leave fields empty.
func ConsulFromEnv(lookup func(string) (string, bool)) Consul {
	get := func(k string) string { v, _ := lookup(k); return v }
	c := Consul{
		Address:       get("CONSUL_HTTP_ADDR"),
		Token:         Secret(get("CONSUL_HTTP_TOKEN")),
		TokenFile:     get("CONSUL_HTTP_TOKEN_FILE"),
		CAFile:        get("CONSUL_CACERT"),
		CertFile:      get("CONSUL_CLIENT_CERT"),
		KeyFile:       get("CONSUL_CLIENT_KEY"),
		TLSServerName: get("CONSUL_TLS_SERVER_NAME"),
	}
	if v, ok := lookup("CONSUL_HTTP_SSL"); ok {
		if b, err := strconv.ParseBool(v); err == nil {
			c.SSL = &b
		}
	}
	if v, ok := lookup("CONSUL_HTTP_SSL_VERIFY"); ok {
		if b, err := strconv.ParseBool(v); err == nil {
			c.InsecureSkipVerify = !b
		}
	}
	return c
}

// Over returns base with every field that c sets replacing base's.
func (c Consul) Over(base Consul) Consul {
	pick := func(over, under string) string {
		if over != "" {
			return over
		}
		return under
	}
	out := base
	out.Address = pick(c.Address, base.Address)
	out.Token = Secret(pick(string(c.Token), string(base.Token)))
	out.TokenFile = pick(c.TokenFile, base.TokenFile)
	out.CAFile = pick(c.CAFile, base.CAFile)
	out.CertFile = pick(c.CertFile, base.CertFile)
	out.KeyFile = pick(c.KeyFile, base.KeyFile)
	out.TLSServerName = pick(c.TLSServerName, base.TLSServerName)
	out.Datacenter = pick(c.Datacenter, base.Datacenter)
	if c.SSL != nil {
		out.SSL = c.SSL
	}
	out.InsecureSkipVerify = c.InsecureSkipVerify || base.InsecureSkipVerify
	return out
}

// UseSSL reports whether to talk HTTPS to the agent.
func (c Consul) UseSSL() bool {
	return (c.SSL != nil && *c.SSL) || strings.HasPrefix(c.Address, "https://")
}

// HostPort is Address without any scheme.
func (c Consul) HostPort() string {
	a := strings.TrimPrefix(strings.TrimPrefix(c.Address, "https://"), "http://")
	return strings.TrimSuffix(a, "/")
}

func (c *Consul) setDefaults() {
	if c.Address == "" {
		c.Address = "127.0.0.1:8500"
	}
}

func (c *Consul) validate(report reporter) {
	if _, _, err := net.SplitHostPort(c.HostPort()); err != nil {
		report("consul.address", "want host:port, got %q", c.Address)
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		report("consul.cert_file", "cert_file and key_file go together")
	}
}
