// Package consulclient builds a Consul API client from lbctl's config. It is
// the one place the ACL token is read from its file and handed to Consul.
package consulclient

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/lbctl/lbctl/config"
	"github.com/lbctl/lbctl/internal/backoff"
	"github.com/lbctl/lbctl/internal/longpoll"
)

// New returns a client for the agent described by c. Its requests go
// through a longpoll.Transport: lbctl holds one blocking query per watched
// service open, and there each costs one goroutine instead of three.
func New(c config.Consul) (*api.Client, error) {
	cfg, err := APIConfig(c)
	if err != nil {
		return nil, err
	}
	dial, err := dialer(c, cfg.TLSConfig)
	if err != nil {
		return nil, fmt.Errorf("consul client for %s: %w", c.HostPort(), err)
	}
	cfg.HttpClient = &http.Client{Transport: &longpoll.Transport{Dial: dial, MaxIdle: maxIdleConns}}
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

// maxIdleConns is how many connections to the agent are kept between
// requests. Blocking queries pick theirs up again at once; the rest are
// short requests (sessions, KV, registrations).
const maxIdleConns = 8

// dialer connects to the agent: TCP, with TLS around it when c asks for it.
func dialer(c config.Consul, tc api.TLSConfig) (func(context.Context) (net.Conn, error), error) {
	addr := c.HostPort()
	d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	if !c.UseSSL() {
		return func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }, nil
	}
	tlsConf, err := api.SetupTLSConfig(&tc)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	if tlsConf.ServerName == "" {
		tlsConf.ServerName, _, _ = net.SplitHostPort(addr)
	}
	return func(ctx context.Context) (net.Conn, error) {
		raw, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		conn := tls.Client(raw, tlsConf)
		if err := conn.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, fmt.Errorf("tls handshake with %s: %w", addr, err)
		}
		return conn, nil
	}, nil
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

// CreateSession creates a session, retrying (until ctx ends) while the agent
// is still starting: a session belongs to a node, and an agent that has just
// started answers "No cluster leader" and then "Missing node registration"
// until it has registered its own node, a second or so. Any other error is
// returned at once.
func CreateSession(ctx context.Context, client *api.Client, entry *api.SessionEntry) (string, error) {
	retry := backoff.New(20*time.Millisecond, time.Second)
	for {
		id, _, err := client.Session().Create(entry, (&api.WriteOptions{}).WithContext(ctx))
		if err == nil || !agentStarting(err) {
			return id, err
		}
		if ctx.Err() != nil || retry.Wait(ctx) != nil {
			return "", fmt.Errorf("%w (the agent was still starting)", err)
		}
	}
}

// agentStarting says whether err is a Consul agent's answer while it has no
// leader or has not registered its own node yet.
func agentStarting(err error) bool {
	var se api.StatusError
	if !errors.As(err, &se) || se.Code != http.StatusInternalServerError {
		return false
	}
	return strings.Contains(se.Body, "Missing node registration") || strings.Contains(se.Body, "No cluster leader")
}
