package consultemplate

import (
	"errors"
	"fmt"
	"strings"

	ctconfig "github.com/hashicorp/consul-template/config"
	dep "github.com/hashicorp/consul-template/dependency"

	"github.com/lbctl/lbctl/config"
	"github.com/lbctl/lbctl/internal/consulclient"
)

// newClientSet builds the consul-template client set for c, with
// consul-template's own transport defaults. It does not contact Consul.
// The token comes from consulclient.Token, the one place that reads the
// token file. Only the Consul client is created: templates that call Vault
// or Nomad functions get no data.
func newClientSet(c config.Consul, token string) (*dep.ClientSet, error) {
	clients := dep.NewClientSet()
	err := clients.CreateConsulClient(&dep.CreateConsulClientInput{
		Address:                      c.HostPort(),
		Token:                        token,
		SSLEnabled:                   c.UseSSL(),
		SSLVerify:                    !c.InsecureSkipVerify,
		SSLCert:                      c.CertFile,
		SSLKey:                       c.KeyFile,
		SSLCACert:                    c.CAFile,
		ServerName:                   c.TLSServerName,
		TransportDialKeepAlive:       ctconfig.DefaultDialKeepAlive,
		TransportDialTimeout:         ctconfig.DefaultDialTimeout,
		TransportIdleConnTimeout:     ctconfig.DefaultIdleConnTimeout,
		TransportMaxIdleConns:        ctconfig.DefaultMaxIdleConns,
		TransportMaxIdleConnsPerHost: ctconfig.DefaultMaxIdleConnsPerHost,
		TransportMaxConnsPerHost:     ctconfig.DefaultMaxConnsPerHost,
		TransportTLSHandshakeTimeout: ctconfig.DefaultTLSHandshakeTimeout,
	})
	if err != nil {
		return nil, fmt.Errorf("consul client for %s: %w", c.HostPort(), redactor(token)(err))
	}
	return clients, nil
}

// consulToken is the ACL token from the config or its file.
func consulToken(c config.Consul) (string, error) {
	token, err := consulclient.Token(c)
	if err != nil {
		return "", fmt.Errorf("consul-template: %w", err)
	}
	return token, nil
}

// redactor returns a function that removes token from an error's message.
// Consul's client sends the token in a header, never in a URL, so this is
// a second line of defence, not the first.
func redactor(token string) func(error) error {
	return func(err error) error {
		if err == nil || token == "" || !strings.Contains(err.Error(), token) {
			return err
		}
		return errors.New(strings.ReplaceAll(err.Error(), token, "<redacted>"))
	}
}
