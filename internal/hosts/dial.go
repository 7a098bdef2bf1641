package hosts

import (
	"context"
	"net"
	"net/http"
	"os"
	"runtime"
	"time"

	"github.com/hashicorp/consul/api"
	"golang.org/x/sys/unix"
)

// Dial opens a TCP connection from inside h's namespace: the test process
// itself stays in the machine's namespace, only the socket is h's. A socket
// belongs to the namespace of the thread that created it, so one goroutine
// locks its thread, moves it into h's namespace, dials, and moves it back.
// Should moving back fail, the goroutine exits still locked and Go ends the
// thread rather than reuse it. Threads are not ended otherwise: a child
// process started with Pdeathsig dies with the thread that forked it.
func (h *Host) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	type result struct {
		conn net.Conn
		err  error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		home, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{nil, err}
			return
		}
		defer home.Close()
		f, err := os.Open("/run/netns/" + h.NS)
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{nil, err}
			return
		}
		err = unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
		f.Close()
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{nil, err}
			return
		}
		c, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, addr)
		if unix.Setns(int(home.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		done <- result{c, err}
	}()
	r := <-done
	return r.conn, r.err
}

// GRPCDial is Dial in the shape grpc.WithContextDialer and loadgen.Options.Dial take.
func (h *Host) GRPCDial(ctx context.Context, addr string) (net.Conn, error) {
	return h.Dial(ctx, "tcp", addr)
}

// HTTPClient makes HTTP requests from inside h's namespace.
func (h *Host) HTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: h.Dial, MaxIdleConnsPerHost: 16}}
}

// Consul is a client of h's local Consul agent (127.0.0.1:8500 in h's
// namespace), one per host so its connections are reused (Consul limits
// connections per client address).
func (h *Host) Consul() *api.Client {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.consul == nil {
		c, err := api.NewClient(&api.Config{Address: "127.0.0.1:8500", HttpClient: h.HTTPClient()})
		if err != nil {
			h.net.t.Fatalf("consul client on %s: %v", h.Name, err)
		}
		h.consul = c
	}
	return h.consul
}
