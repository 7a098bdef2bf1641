package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lbctl/lbctl/catalog/catalogtest"
)

// agentProxy is a reverse proxy in front of the agent that counts what a
// client asks of it: the connections it accepted (open now, and most at
// once), the requests, the answers 429 (the agent's limit of connections
// from one address; behind the proxy they all come from 127.0.0.1, as the
// client's own would) and the round trips to the agent that failed.
type agentProxy struct {
	addr         string
	srv          *http.Server
	transport    *http.Transport
	count        catalogtest.Counter
	failed       atomic.Int64
	firstFailure atomic.Pointer[error]
}

func startAgentProxy(b testing.TB, agent string) *agentProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	p := &agentProxy{addr: ln.Addr().String(), transport: &http.Transport{
		DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		// Keep as many connections to the agent as the client holds to the
		// proxy: the proxy must not be what limits it.
		MaxIdleConnsPerHost: 1 << 16,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true, // pass the client's Accept-Encoding through, add none
	}}
	target := &url.URL{Scheme: "http", Host: agent}
	rp := &httputil.ReverseProxy{
		Rewrite:        func(r *httputil.ProxyRequest) { r.SetURL(target) },
		Transport:      p.transport,
		ModifyResponse: p.countAnswer,
		ErrorHandler:   p.countFailure,
	}
	p.srv = &http.Server{Handler: p.countRequest(rp), ConnState: p.countConn}
	go p.srv.Serve(ln)
	return p
}

func (p *agentProxy) countRequest(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.count.Requests.Add(1)
		h.ServeHTTP(w, r)
	})
}

func (p *agentProxy) countAnswer(resp *http.Response) error {
	p.count.Answered(resp.StatusCode)
	return nil
}

// countFailure answers 502, as ReverseProxy does by default; a request
// the client gave up on is no failure.
func (p *agentProxy) countFailure(w http.ResponseWriter, _ *http.Request, err error) {
	if !errors.Is(err, context.Canceled) {
		p.failed.Add(1)
		p.firstFailure.CompareAndSwap(nil, &err)
	}
	w.WriteHeader(http.StatusBadGateway)
}

func (p *agentProxy) countConn(_ net.Conn, s http.ConnState) {
	switch s {
	case http.StateNew:
		p.count.Opened()
	case http.StateClosed, http.StateHijacked:
		p.count.Closed()
	}
}

// sample is the requests so far, now.
func (p *agentProxy) sample() sample {
	return sample{requests: p.count.Requests.Load(), at: time.Now()}
}

// notes says what the agent refused and what failed, if anything.
func (p *agentProxy) notes() []string {
	var notes []string
	if n := p.count.RateLimited.Load(); n > 0 {
		notes = append(notes, fmt.Sprintf("%d of its %d requests were answered 429 Too Many Requests: the agent's limit of 200 connections per client address (consul-template holds a blocking query, so a connection, for each service; at most %d connections to the proxy were open at once)",
			n, p.count.Requests.Load(), p.count.Most.Load()))
	}
	if n := p.failed.Load(); n > 0 {
		notes = append(notes, fmt.Sprintf("%d of its %d requests failed at the proxy, no answer from the agent (the first: %q); the agent also writes its 429 on a new connection before any request, which net/http logs on stderr as an unsolicited response",
			n, p.count.Requests.Load(), (*p.firstFailure.Load()).Error()))
	}
	return notes
}

// close closes the listener and every connection, both sides.
func (p *agentProxy) close() {
	p.srv.Close()
	p.transport.CloseIdleConnections()
}
