package registrar

import (
	"fmt"

	"github.com/hashicorp/consul/api"

	"github.com/lbctl/lbctl/config"
)

// NewConsulClient is a Consul API client for the connection c describes
// (defaults already filled). The token goes into the client only; it is
// never part of an error.
func NewConsulClient(c config.Consul) (*api.Client, error) {
	cfg := api.DefaultNonPooledConfig()
	cfg.Address = c.HostPort()
	cfg.Scheme = "http"
	if c.UseSSL() {
		cfg.Scheme = "https"
	}
	cfg.Datacenter = c.Datacenter
	cfg.Token = c.Token.Reveal()
	cfg.TokenFile = c.TokenFile
	cfg.TLSConfig = api.TLSConfig{
		Address: c.TLSServerName, CAFile: c.CAFile, CertFile: c.CertFile, KeyFile: c.KeyFile,
		InsecureSkipVerify: c.InsecureSkipVerify,
	}
	client, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("consul client for %s: %w", cfg.Address, err)
	}
	return client, nil
}
