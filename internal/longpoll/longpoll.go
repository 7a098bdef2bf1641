// Package longpoll is an http.RoundTripper for a client that holds many
// blocking queries open at once against one server (lbctl watching a
// hundred services through its Consul agent).
//
// net/http's Transport gives every connection a reader and a writer
// goroutine besides the one waiting for the answer: three goroutines, their
// stacks and buffers per open query. Here a request is written and its
// answer read by the goroutine that asked, on a connection it has to itself
// until the body is closed, so an open query costs one goroutine and one
// small buffer. It speaks HTTP/1.1 only, keeps connections whose answers were
// read to the end for the next request, and honours the request's context
// by expiring the connection's deadline.
package longpoll

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// Transport sends requests over connections made by Dial. The zero value is
// not usable: set Dial.
type Transport struct {
	// Dial opens a connection to the server (plain TCP, or TLS around it).
	Dial func(ctx context.Context) (net.Conn, error)
	// MaxIdle is how many idle connections are kept for reuse.
	MaxIdle int

	mu   sync.Mutex
	idle []*conn
}

// conn is one connection and the reader its answers are parsed from.
type conn struct {
	net.Conn
	r *bufio.Reader
}

// readBufferSize fits an answer's status line and headers.
const readBufferSize = 1 << 10

// RoundTrip sends req and reads the answer's status and headers; the body
// is read from the same connection as the caller reads it.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	for {
		c, reused, err := t.get(req.Context())
		if err != nil {
			return nil, err
		}
		resp, err := t.exchange(c, req)
		if err == nil {
			return resp, nil
		}
		c.Close()
		if ctxErr := req.Context().Err(); ctxErr != nil {
			return nil, ctxErr
		}
		// A kept connection the server has since closed fails before any
		// answer: send it again on a new one, as net/http does.
		if !reused || !retryable(req) {
			return nil, err
		}
	}
}

// exchange writes req on c and reads the answer's head.
func (t *Transport) exchange(c *conn, req *http.Request) (*http.Response, error) {
	stop := context.AfterFunc(req.Context(), func() { c.SetDeadline(time.Unix(1, 0)) })
	if err := req.Write(c); err != nil {
		stop()
		return nil, err
	}
	resp, err := http.ReadResponse(c.r, req)
	if err != nil {
		stop()
		return nil, err
	}
	resp.Body = &body{body: resp.Body, c: c, t: t, stop: stop, keep: !resp.Close}
	return resp, nil
}

// retryable: a request without a body that changes nothing.
func retryable(req *http.Request) bool {
	return (req.Method == http.MethodGet || req.Method == http.MethodHead) && (req.Body == nil || req.Body == http.NoBody)
}

// get takes an idle connection, or dials a new one.
func (t *Transport) get(ctx context.Context) (c *conn, reused bool, err error) {
	t.mu.Lock()
	if n := len(t.idle); n > 0 {
		c = t.idle[n-1]
		t.idle = t.idle[:n-1]
	}
	t.mu.Unlock()
	if c != nil {
		return c, true, nil
	}
	nc, err := t.Dial(ctx)
	if err != nil {
		return nil, false, err
	}
	return &conn{Conn: nc, r: bufio.NewReaderSize(nc, readBufferSize)}, false, nil
}

// put keeps c for the next request, or closes it when enough are kept.
func (t *Transport) put(c *conn) {
	t.mu.Lock()
	if len(t.idle) < t.MaxIdle {
		t.idle = append(t.idle, c)
		c = nil
	}
	t.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

// CloseIdleConnections closes the kept connections (http.Client calls it).
func (t *Transport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = nil
	t.mu.Unlock()
	for _, c := range idle {
		c.Close()
	}
}

// body hands its connection back once the answer was read to the end and
// the request's context never expired it; otherwise the connection is closed.
type body struct {
	body io.ReadCloser
	c    *conn
	t    *Transport
	stop func() bool
	keep bool
	eof  bool
	once sync.Once
}

func (b *body) Read(p []byte) (int, error) {
	n, err := b.body.Read(p)
	if errors.Is(err, io.EOF) {
		b.eof = true
	}
	return n, err
}

func (b *body) Close() error {
	b.once.Do(func() {
		b.body.Close()
		if b.stop() && b.eof && b.keep {
			b.t.put(b.c)
			return
		}
		b.c.Close()
	})
	return nil
}
