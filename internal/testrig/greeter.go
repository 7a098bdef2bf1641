package testrig

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/lbctl/lbctl/greeter"
)

// Greeter is a real gRPC greeter backend listening on a loopback port.
type Greeter struct {
	*greeter.Server
	Addr string
	Port int

	cancel context.CancelFunc
	done   chan error
	conns  atomic.Int64
}

// StartGreeter serves a greeter that answers as instance (and version) on a
// free loopback port, until the test ends or Stop is called.
func StartGreeter(t testing.TB, instance, version string) *Greeter {
	t.Helper()
	return StartGreeterOn(t, "127.0.0.1:0", instance, version)
}

// StartGreeterOn is StartGreeter listening on addr (e.g. "[::1]:0").
func StartGreeterOn(t testing.TB, addr, instance, version string) *Greeter {
	t.Helper()
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("greeter listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	g := &Greeter{
		Server: &greeter.Server{Instance: instance, Version: version},
		Addr:   lis.Addr().String(), Port: lis.Addr().(*net.TCPAddr).Port,
		cancel: cancel, done: make(chan error, 1),
	}
	go func() { g.done <- g.Serve(ctx, countingListener{lis, &g.conns}) }()
	t.Cleanup(g.Stop)
	return g
}

// Conns is how many connections the greeter has accepted.
func (g *Greeter) Conns() int64 { return g.conns.Load() }

type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// Stop stops the greeter gracefully and waits for in-flight calls.
func (g *Greeter) Stop() {
	if g.cancel == nil {
		return
	}
	g.cancel()
	<-g.done
	g.cancel = nil
}

// Registration is a Consul registration for this backend as service name,
// with a TTL-free registration (no checks: passing at once) and the given tags.
func (g *Greeter) Registration(name string, tags ...string) *api.AgentServiceRegistration {
	return &api.AgentServiceRegistration{
		ID: name + "-" + g.Instance, Name: name, Address: "127.0.0.1", Port: g.Port, Tags: tags,
		Meta: map[string]string{"version": g.Version},
	}
}

// CallInstance makes one SayHello call to addr and returns which instance answered.
func CallInstance(ctx context.Context, addr string) (string, error) {
	conn, client, err := greeter.Dial(addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	reply, err := greeter.Hello(ctx, client, "testrig")
	if err != nil {
		return "", err
	}
	return reply.GetInstance(), nil
}

// LoopbackAddr is "127.0.0.1:port".
func LoopbackAddr(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// ExpectInstance polls calls to addr until instance answers.
func ExpectInstance(t testing.TB, addr, instance string, timeout time.Duration) {
	t.Helper()
	WaitFor(t, timeout, instance+" to answer at "+addr, func() error {
		got, err := CallInstance(context.Background(), addr)
		if err != nil {
			return err
		}
		if got != instance {
			return fmt.Errorf("%s answered", got)
		}
		return nil
	})
}

// ExpectOnly polls until n calls in a row to addr are all answered by
// instance: the state after a change has fully taken effect, not merely
// begun (an upstream list in between may still hold the old instances).
func ExpectOnly(t testing.TB, addr, instance string, n int, timeout time.Duration) {
	t.Helper()
	WaitFor(t, timeout, "only "+instance+" to answer at "+addr, func() error {
		for i := range n {
			got, err := CallInstance(context.Background(), addr)
			if err != nil {
				return err
			}
			if got != instance {
				return fmt.Errorf("call %d of %d answered by %s", i+1, n, got)
			}
		}
		return nil
	})
}
