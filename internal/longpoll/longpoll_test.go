package longpoll

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// server is an httptest server that counts the connections it accepts.
type server struct {
	*httptest.Server
	conns  atomic.Int32
	closed chan struct{}
}

func newServer(t *testing.T, h http.HandlerFunc, configure ...func(*http.Server)) *server {
	s := &server{closed: make(chan struct{}, 100)}
	s.Server = httptest.NewUnstartedServer(h)
	for _, f := range configure {
		f(s.Config)
	}
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			s.conns.Add(1)
		case http.StateClosed:
			s.closed <- struct{}{}
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

func clientFor(s *server) *http.Client {
	addr := s.Listener.Addr().String()
	var d net.Dialer
	return &http.Client{Transport: &Transport{MaxIdle: 4, Dial: func(ctx context.Context) (net.Conn, error) {
		return d.DialContext(ctx, "tcp", addr)
	}}}
}

func get(t *testing.T, c *http.Client, ctx context.Context, url string) (string, error) {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func TestSequentialRequestsShareOneConnection(t *testing.T) {
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "answer "+r.URL.Query().Get("n")) })
	c := clientFor(s)
	for _, n := range []string{"1", "2", "3"} {
		got, err := get(t, c, context.Background(), s.URL+"/?n="+n)
		if err != nil || got != "answer "+n {
			t.Fatalf("request %s = %q, %v", n, got, err)
		}
	}
	if n := s.conns.Load(); n != 1 {
		t.Fatalf("%d connections for 3 sequential requests, want 1", n)
	}
}

func TestAnOpenQueryCostsOneGoroutine(t *testing.T) {
	const queries = 50
	release := make(chan struct{})
	var inFlight sync.WaitGroup
	inFlight.Add(queries)
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		inFlight.Done()
		<-release
		io.WriteString(w, "changed")
	})
	c := clientFor(s)
	before := runtime.NumGoroutine()
	results := make(chan error, queries)
	for range queries {
		go func() {
			got, err := get(t, c, context.Background(), s.URL)
			if err == nil && got != "changed" {
				err = errors.New("answer " + got)
			}
			results <- err
		}()
	}
	inFlight.Wait()
	// Each open query: the goroutine that asked, plus the test server's two
	// (its connection's and a background read). net/http's Transport would
	// add its reader and writer: five.
	if grew := runtime.NumGoroutine() - before; grew > 3*queries+5 {
		t.Errorf("%d goroutines for %d open queries, want at most %d", grew, queries, 3*queries+5)
	}
	close(release)
	for range queries {
		if err := <-results; err != nil {
			t.Fatal(err)
		}
	}
}

func TestCancelUnblocksAnOpenQueryAndDropsItsConnection(t *testing.T) {
	block := make(chan struct{})
	t.Cleanup(func() { close(block) })
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/block" {
			select {
			case <-block:
			case <-r.Context().Done():
			}
			return
		}
		io.WriteString(w, "ok")
	})
	c := clientFor(s)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { _, err := get(t, c, ctx, s.URL+"/block"); errc <- err }()
	waitFor(t, func() bool { return s.conns.Load() == 1 })
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled query returned %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("cancel did not unblock the query")
	}
	if got, err := get(t, c, context.Background(), s.URL+"/next"); err != nil || got != "ok" {
		t.Fatalf("next request = %q, %v", got, err)
	}
	if n := s.conns.Load(); n != 2 {
		t.Fatalf("%d connections, want 2: the cancelled one must not be reused", n)
	}
}

func TestAKeptConnectionTheServerClosedIsRetried(t *testing.T) {
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") },
		func(srv *http.Server) { srv.IdleTimeout = time.Millisecond })
	c := clientFor(s)
	if _, err := get(t, c, context.Background(), s.URL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.closed: // the server dropped the idle connection we keep
	case <-time.After(10 * time.Second):
		t.Fatal("server kept the idle connection")
	}
	if got, err := get(t, c, context.Background(), s.URL); err != nil || got != "ok" {
		t.Fatalf("request on a closed kept connection = %q, %v; want it sent again on a new one", got, err)
	}
}

func TestABodyNotReadToTheEndClosesItsConnection(t *testing.T) {
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "a long answer") })
	c := clientFor(s)
	resp, err := c.Get(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Read(make([]byte, 2))
	resp.Body.Close()
	if _, err := get(t, c, context.Background(), s.URL); err != nil {
		t.Fatal(err)
	}
	if n := s.conns.Load(); n != 2 {
		t.Fatalf("%d connections, want 2: a half-read connection must not be reused", n)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
		runtime.Gosched()
	}
}
