// Package catalogtest counts what a watcher costs its Consul agent: the
// connections it holds and the requests it makes. The scale test and
// lbctl-bench-scale use it.
package catalogtest

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/lbctl/lbctl/config"
	"github.com/lbctl/lbctl/internal/consulclient"
	"github.com/lbctl/lbctl/internal/longpoll"
)

// Counter counts requests and open connections of the clients it builds.
type Counter struct {
	Requests, Open, Most atomic.Int64
	// RateLimited counts answers 429 (Too Many Requests): the agent refused
	// a request for too many connections or requests from this address.
	RateLimited atomic.Int64
}

// Client is a client for the agent at addr built as consulclient.New builds
// lbctl's (its config, the longpoll transport, 8 idle connections kept),
// with every request and connection counted.
func (c *Counter) Client(addr string) (*api.Client, error) {
	cfg, err := consulclient.APIConfig(config.Consul{Address: addr})
	if err != nil {
		return nil, err
	}
	d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	tr := &longpoll.Transport{MaxIdle: 8, Dial: func(ctx context.Context) (net.Conn, error) {
		nc, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		n := c.Open.Add(1)
		for m := c.Most.Load(); n > m && !c.Most.CompareAndSwap(m, n); m = c.Most.Load() {
		}
		return &countedConn{Conn: nc, c: c}, nil
	}}
	cfg.HttpClient = &http.Client{Transport: countingRT{tr, c}}
	client, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("consul client for %s: %w", addr, err)
	}
	return client, nil
}

type countingRT struct {
	rt http.RoundTripper
	c  *Counter
}

func (r countingRT) RoundTrip(req *http.Request) (*http.Response, error) {
	r.c.Requests.Add(1)
	resp, err := r.rt.RoundTrip(req)
	if err == nil && resp.StatusCode == http.StatusTooManyRequests {
		r.c.RateLimited.Add(1)
	}
	return resp, err
}

type countedConn struct {
	net.Conn
	c    *Counter
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.c.Open.Add(-1) })
	return c.Conn.Close()
}
