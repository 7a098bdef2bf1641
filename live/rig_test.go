package live

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/lbctl/lbctl/greeter"
	"github.com/lbctl/lbctl/greeter/greeterpb"
	"github.com/lbctl/lbctl/internal/testrig"
)

// rig is a real nginx with the lua module in live mode: HTTPConfig, and one
// upstream and one gRPC server per name, written by hand the way lbctl's
// renderer writes them. Every response carries the answering worker's pid in
// x-worker.
type rig struct {
	t      testing.TB
	nginx  *testrig.Nginx
	client *Client
	socket string
	seed   string
	ports  map[string]int // gRPC listen port by upstream name
}

type rigOptions struct {
	workers   int
	dictSize  string // "8m" unless set
	seed      Set    // written as the seed file before nginx starts
	upstreams string // extra directives inside each upstream block
	location  string // extra directives inside each location
}

func startRig(t testing.TB, opts rigOptions, names ...string) *rig {
	t.Helper()
	n := testrig.NewNginxWith(t, testrig.NginxOptions{Lua: true, Workers: max(opts.workers, 1)})
	r := &rig{
		t: t, nginx: n, socket: filepath.Join(n.Dir, "live.sock"), seed: filepath.Join(n.Dir, "live-seed.json"),
		ports: map[string]int{},
	}
	if opts.seed != nil {
		if err := WriteSeed(r.seed, opts.seed); err != nil {
			t.Fatal(err)
		}
	}
	var conf strings.Builder
	conf.WriteString(HTTPConfig(r.socket, r.seed, cmp.Or(opts.dictSize, "8m")))
	for _, name := range names {
		r.ports[name] = testrig.FreePort(t)
		fmt.Fprintf(&conf, `
upstream %[1]s {
    server 0.0.0.1:1;
    balancer_by_lua_block { require("lbctl_live").balance("%[1]s") }
    keepalive 16;
    keepalive_timeout 60s;
    %[3]s
}
server {
    listen 127.0.0.1:%[2]d http2 reuseport;
    add_header x-worker $pid always;
    location / {
        access_by_lua_block { require("lbctl_live").gate("%[1]s", "svc_%[1]s") }
        %[4]s
        grpc_pass grpc://%[1]s;
    }
}
`, name, r.ports[name], opts.upstreams, opts.location)
	}
	n.WriteConf("live.conf", conf.String())
	if err := n.Test(); err != nil {
		t.Fatal(err)
	}
	n.Start()
	r.client = NewClient(r.socket)
	testrig.WaitFor(t, 10*time.Second, "the live API", func() error {
		_, err := r.client.Read(context.Background())
		return err
	})
	return r
}

func (r *rig) addr(name string) string { return testrig.LoopbackAddr(r.ports[name]) }

// push pushes set and fails the test unless nginx then holds every version in it.
func (r *rig) push(set Set, prune bool) map[string]string {
	r.t.Helper()
	held, err := r.client.Push(context.Background(), set, prune)
	if err != nil {
		r.t.Fatalf("push: %v", err)
	}
	for name, u := range set {
		if held[name] != u.Version {
			r.t.Fatalf("after push nginx holds %s at %q, want %q (holds %v)", name, held[name], u.Version, held)
		}
	}
	return held
}

// answer is who answered one call: the greeter instance and the nginx worker.
type answer struct {
	instance, worker string
}

// call makes one SayHello through upstream name's server on a fresh connection.
func (r *rig) call(name string) (answer, error) { return r.callWithin(name, 5*time.Second) }

func (r *rig) callWithin(name string, timeout time.Duration) (answer, error) {
	conn, client, err := greeter.Dial(r.addr(name))
	if err != nil {
		return answer{}, err
	}
	defer conn.Close()
	return callOnWithin(client, timeout)
}

// callOn makes one SayHello on an existing client connection.
func callOn(client greeterpb.GreeterClient) (answer, error) {
	return callOnWithin(client, 5*time.Second)
}

func callOnWithin(client greeterpb.GreeterClient, timeout time.Duration) (answer, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var md metadata.MD
	reply, err := client.SayHello(ctx, &greeterpb.HelloRequest{Name: "live"}, grpc.Header(&md))
	a := answer{worker: strings.Join(md.Get("x-worker"), ",")}
	if err != nil {
		return a, err
	}
	a.instance = reply.GetInstance()
	return a, nil
}

// untilEveryWorker calls name on fresh connections until each of the
// workers has answered at least twice (reuseport spreads connections over
// them), failing at the first call not answered by want. It returns the
// calls each worker (by pid) answered.
func (r *rig) untilEveryWorker(name, want string, workers int) map[string]int {
	r.t.Helper()
	seen := map[string]int{}
	calls := 0
	testrig.WaitFor(r.t, 20*time.Second, fmt.Sprintf("%d workers to answer %s", workers, name), func() error {
		a, err := r.call(name)
		calls++
		if err != nil {
			r.t.Fatalf("call %d: %v", calls, err)
		}
		if a.instance != want {
			r.t.Fatalf("call %d answered by %s in worker %s, want %s", calls, a.instance, a.worker, want)
		}
		seen[a.worker]++
		if len(seen) < workers {
			return fmt.Errorf("workers seen: %v", seen)
		}
		for w, k := range seen {
			if k < 2 {
				return fmt.Errorf("worker %s answered %d times", w, k)
			}
		}
		return nil
	})
	return seen
}

// reload sends SIGHUP and waits until the old workers are told to stop,
// which nginx does after the new configuration's init_by_lua has run and its
// workers started.
func (r *rig) reload(oldWorkers int) {
	r.t.Helper()
	before := strings.Count(r.nginx.ErrorLogText(), "gracefully shutting down")
	if err := syscall.Kill(r.nginx.PID(), syscall.SIGHUP); err != nil {
		r.t.Fatal(err)
	}
	testrig.WaitFor(r.t, 10*time.Second, "old workers to be told to stop", func() error {
		if n := strings.Count(r.nginx.ErrorLogText(), "gracefully shutting down"); n < before+oldWorkers {
			return fmt.Errorf("%d of %d old workers stopping", n-before, oldWorkers)
		}
		return nil
	})
}

func peerOf(g *testrig.Greeter, weight int) Peer {
	host, port, _ := net.SplitHostPort(g.Addr)
	p, _ := strconv.Atoi(port)
	return Peer{Host: host, Port: p, Weight: weight, ID: "svc-" + g.Instance}
}

// blackhole is a listening socket whose accept queue is full: connecting
// to it hangs in SYN_SENT (the kernel drops the SYNs) until close, after which
// the next SYN retransmit is refused.
type blackhole struct {
	fd     int
	port   int
	filler net.Conn
}

func startBlackhole(t *testing.T) *blackhole {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := &blackhole{fd: fd}
	t.Cleanup(b.close)
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil { // room for one connection
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	b.port = sa.(*syscall.SockaddrInet4).Port
	if b.filler, err = net.Dial("tcp", testrig.LoopbackAddr(b.port)); err != nil {
		t.Fatal(err)
	}
	return b
}

func (b *blackhole) peer() Peer { return Peer{Host: "127.0.0.1", Port: b.port, Weight: 1} }

// connecting reports whether some socket is in SYN_SENT to the blackhole.
func (b *blackhole) connecting() bool {
	data, _ := os.ReadFile("/proc/net/tcp")
	for _, line := range strings.Split(string(data), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 3 && f[3] == "02" && strings.HasSuffix(f[2], fmt.Sprintf(":%04X", b.port)) {
			return true
		}
	}
	return false
}

func (b *blackhole) close() {
	if b.fd >= 0 {
		syscall.Close(b.fd)
		b.fd = -1
	}
	if b.filler != nil {
		b.filler.Close()
	}
}
