// Package consulclient builds a Consul API client from lbctl's config. It is
// the one place the ACL token is read from its file and handed to Consul.
package consulclient

import (
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-cleanhttp"

	"github.com/lbctl/lbctl/config"
)

// New returns a client for the agent described by c.
func New(c config.Consul) (*api.Client, error) {
	cfg, err := APIConfig(c)
	if err != nil {
		return nil, err
	}
	client, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("consul client for %s: %w", c.HostPort(), err)
	}
	return client, nil
}

// APIConfig is c as consul/api takes it. It starts from an empty api.Config,
// not api.DefaultConfig, so nothing is read from the environment here: the
// environment was layered into c by config.Load.
func APIConfig(c config.Consul) (*api.Config, error) {
	token, err := Token(c)
	if err != nil {
		return nil, err
	}
	cfg := &api.Config{
		Address:    c.HostPort(),
		Scheme:     "http",
		Datacenter: c.Datacenter,
		Token:      token,
		Transport:  agentTransport(),
		TLSConfig: api.TLSConfig{
			Address:            c.TLSServerName,
			CAFile:             c.CAFile,
			CertFile:           c.CertFile,
			KeyFile:            c.KeyFile,
			InsecureSkipVerify: c.InsecureSkipVerify,
		},
	}
	if c.UseSSL() {
		cfg.Scheme = "https"
	}
	return cfg, nil
}

// agentTransport is consul/api's default transport, made lighter for many
// blocking queries held open at once against the local agent: responses come
// uncompressed (each gzip reader costs a 32 KB window, and loopback gains
// nothing from compression), and each connection's buffers are 1 KB instead
// of 4 KB (requests are one short line of query, answers are read through).
func agentTransport() *http.Transport {
	t := cleanhttp.DefaultPooledTransport()
	t.DisableCompression = true
	t.ReadBufferSize = 1 << 10
	t.WriteBufferSize = 1 << 10
	return t
}

// Token is the ACL token: the token itself when set, else the token file's content.
func Token(c config.Consul) (string, error) {
	if c.Token != "" || c.TokenFile == "" {
		return c.Token.Reveal(), nil
	}
	b, err := os.ReadFile(c.TokenFile)
	if err != nil {
		return "", fmt.Errorf("consul token file: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}
