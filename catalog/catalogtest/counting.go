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

// Counter counts requests and open connections of the clients it builds,
// or of anything else that reports them (a proxy in front of the agent).
type Counter struct {
	Requests, Open, Most atomic.Int64
	// RateLimited counts answers 429 (Too Many Requests): the agent refused
	// a request for too many connections or requests from this address.
	RateLimited atomic.Int64
}

// Opened counts a connection opened, and the most open at once.
func (c *Counter) Opened() {
	n := c.Open.Add(1)
	for m := c.Most.Load(); n > m && !c.Most.CompareAndSwap(m, n); m = c.Most.Load() {
	}
}

// Closed counts a connection closed.
func (c *Counter) Closed() { c.Open.Add(-1) }

// Answered counts an answer with status code status.
func (c *Counter) Answered(status int) {
	if status == http.StatusTooManyRequests {
		c.RateLimited.Add(1)
	}
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
		c.Opened()
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
	if err == nil {
		r.c.Answered(resp.StatusCode)
	}
	return resp, err
}

type countedConn struct {
	net.Conn
	c    *Counter
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(c.c.Closed)
	return c.Conn.Close()
}
