package live

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/lbctl/lbctl/greeter"
	"github.com/lbctl/lbctl/internal/testrig"
)

// swrr is nginx's smooth weighted round robin, the reference for the Lua one.
func swrr(weights []int, n int) []int {
	cur := make([]int, len(weights))
	picks := make([]int, n)
	for k := range n {
		best, total := -1, 0
		for i, w := range weights {
			cur[i] += w
			total += w
			if best < 0 || cur[i] > cur[best] {
				best = i
			}
		}
		cur[best] -= total
		picks[k] = best
	}
	return picks
}

// Over one client connection (so one worker, whose round robin state starts
// afresh with each new set) the picks are exactly nginx's sequence, so the
// proportions are exact over any multiple of the total weight.
func TestSmoothWeightedRoundRobinExactProportions(t *testing.T) {
	gs := []*testrig.Greeter{
		testrig.StartGreeter(t, "a", "v1"), testrig.StartGreeter(t, "b", "v1"), testrig.StartGreeter(t, "c", "v1"),
	}
	r := startRig(t, rigOptions{workers: 2}, "grpc_x")
	conn, client, err := greeter.Dial(r.addr("grpc_x"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, weights := range [][]int{{1, 4, 5}, {1000, 9000}, {10000, 10000, 1}, {7}} {
		var peers []Peer
		for i, w := range weights {
			peers = append(peers, peerOf(gs[i], w))
		}
		r.push(Set{"grpc_x": NewUpstream(peers)}, false)
		want := swrr(weights, 100)
		counts := map[string]int{}
		worker := ""
		for k, wi := range want {
			a, err := callOn(client)
			if err != nil {
				t.Fatalf("weights %v call %d: %v", weights, k, err)
			}
			if worker == "" {
				worker = a.worker
			}
			if a.worker != worker {
				t.Fatalf("one connection reached workers %s and %s", worker, a.worker)
			}
			if a.instance != gs[wi].Instance {
				t.Fatalf("weights %v call %d answered by %s, want %s (nginx's order)", weights, k, a.instance, gs[wi].Instance)
			}
			counts[a.instance]++
		}
		t.Logf("weights %v: 100 calls %v", weights, counts)
	}
}

// An upstream with zero peers, or none pushed yet, answers UNAVAILABLE at once.
func TestZeroPeersAnswerUnavailableAtOnce(t *testing.T) {
	alpha := testrig.StartGreeter(t, "alpha", "v1")
	r := startRig(t, rigOptions{workers: 2}, "grpc_x")
	unavailable := func(when string) {
		t.Helper()
		start := time.Now()
		_, err := r.call("grpc_x")
		took := time.Since(start)
		if status.Code(err) != codes.Unavailable || status.Convert(err).Message() != "no healthy instances of svc_grpc_x" {
			t.Fatalf("%s: got %v, want Unavailable: no healthy instances of svc_grpc_x", when, err)
		}
		if took > time.Second {
			t.Fatalf("%s: the answer took %s", when, took)
		}
		t.Logf("%s: %v in %s", when, err, took.Round(time.Millisecond))
	}
	unavailable("nothing pushed")
	r.push(Set{"grpc_x": NewUpstream([]Peer{peerOf(alpha, 1)})}, false)
	r.untilEveryWorker("grpc_x", "alpha", 2)
	r.push(Set{"grpc_x": NewUpstream(nil)}, false)
	served := alpha.Served()
	for range 10 {
		unavailable("zero peers pushed")
	}
	if alpha.Served() != served {
		t.Fatal("alpha was called after zero peers were pushed")
	}
}

// A peer that refuses connections costs a call one extra try at most: the
// retry goes to a peer this call has not tried.
func TestRetryGoesToADifferentPeer(t *testing.T) {
	alpha := testrig.StartGreeter(t, "alpha", "v1")
	dead1, dead2 := testrig.FreePort(t), testrig.FreePort(t) // nothing listens
	r := startRig(t, rigOptions{workers: 2}, "grpc_x")
	r.push(Set{"grpc_x": NewUpstream([]Peer{
		{Host: "127.0.0.1", Port: dead1, Weight: 1}, {Host: "127.0.0.1", Port: dead2, Weight: 1}, peerOf(alpha, 1),
	})}, false)
	tries := func(port int) int {
		return strings.Count(r.nginx.ErrorLogText(), fmt.Sprintf(`upstream: "grpc://127.0.0.1:%d"`, port))
	}
	total := 0
	for k := range 30 {
		before1, before2 := tries(dead1), tries(dead2)
		a, err := r.call("grpc_x")
		if err != nil || a.instance != "alpha" {
			t.Fatalf("call %d: %v %+v", k, err, a)
		}
		d1, d2 := tries(dead1)-before1, tries(dead2)-before2
		if d1 > 1 || d2 > 1 {
			t.Fatalf("call %d tried the dead peers %d and %d times", k, d1, d2)
		}
		total += d1 + d2
	}
	if total == 0 {
		t.Fatal("no call tried a dead peer first")
	}
	t.Logf("30 calls, all answered by alpha, %d tries of a dead peer, none twice in one call", total)
}

// keepalive after balancer_by_lua_block keeps upstream connections: many
// calls on fresh client connections reach the backend over one connection
// per worker.
func TestUpstreamKeepaliveReusesConnections(t *testing.T) {
	alpha := testrig.StartGreeter(t, "alpha", "v1")
	r := startRig(t, rigOptions{workers: 2}, "grpc_x")
	r.push(Set{"grpc_x": NewUpstream([]Peer{peerOf(alpha, 1)})}, false)
	calls := 0
	for _, k := range r.untilEveryWorker("grpc_x", "alpha", 2) {
		calls += k
	}
	for range 30 {
		if a, err := r.call("grpc_x"); err != nil || a.instance != "alpha" {
			t.Fatalf("%v %+v", err, a)
		}
	}
	if n := alpha.Conns(); n > 2 {
		t.Fatalf("%d calls opened %d backend connections, want at most one per worker", calls+30, n)
	}
	t.Logf("%d calls, %d backend connections", calls+30, alpha.Conns())
}

// An IPv6 peer is given to nginx in brackets.
func TestIPv6Peer(t *testing.T) {
	six := testrig.StartGreeterOn(t, "[::1]:0", "six", "v1")
	r := startRig(t, rigOptions{workers: 2}, "grpc_x")
	set := Set{"grpc_x": NewUpstream([]Peer{{Host: "::1", Port: six.Port, Weight: 1}})}
	r.push(set, false)
	r.untilEveryWorker("grpc_x", "six", 2)
	got, err := r.client.Read(context.Background())
	if err != nil || got["grpc_x"].Peers[0].Host != "::1" {
		t.Fatalf("read back %+v %v", got, err)
	}
}

// Prune drops the upstreams a push does not list; without it they stay. The
// answer lists every upstream held with prune, the ones pushed without.
func TestPruneDropsUnlistedUpstreams(t *testing.T) {
	alpha := testrig.StartGreeter(t, "alpha", "v1")
	beta := testrig.StartGreeter(t, "beta", "v1")
	r := startRig(t, rigOptions{workers: 2}, "grpc_x", "grpc_y")
	x := NewUpstream([]Peer{peerOf(alpha, 1)})
	r.push(Set{"grpc_x": x, "grpc_y": NewUpstream([]Peer{peerOf(beta, 1)})}, false)
	r.untilEveryWorker("grpc_y", "beta", 2)
	if held := r.push(Set{"grpc_x": x}, false); len(held) != 1 {
		t.Fatalf("push without prune answered %v, want the version of grpc_x, the one pushed", held)
	}
	if got, err := r.client.Read(context.Background()); err != nil || len(got) != 2 {
		t.Fatalf("after a push without prune nginx holds %+v (%v), want both", got, err)
	}
	r.untilEveryWorker("grpc_y", "beta", 2)
	if held := r.push(Set{"grpc_x": x}, true); len(held) != 1 {
		t.Fatalf("push with prune: nginx holds %v, want grpc_x only", held)
	}
	got, err := r.client.Read(context.Background())
	if err != nil || len(got) != 1 || got["grpc_x"].Version != x.Version {
		t.Fatalf("read back %+v %v", got, err)
	}
	for range 10 {
		if _, err := r.call("grpc_y"); status.Code(err) != codes.Unavailable {
			t.Fatalf("pruned grpc_y: %v, want Unavailable", err)
		}
	}
	r.untilEveryWorker("grpc_x", "alpha", 2)
}

// A body larger than client_body_buffer_size (1m) reaches Lua through a temp
// file; 10000 peers is the most an upstream may have.
func TestLargePushBufferedToFile(t *testing.T) {
	r := startRig(t, rigOptions{workers: 2})
	set := Set{}
	for u := range 3 { // 1.7 MB, more than client_body_buffer_size
		set[fmt.Sprintf("grpc_big_%d", u)] = NewUpstream(manyPeers(u, 10000))
	}
	start := time.Now()
	r.push(set, true)
	t.Logf("pushed 3 upstreams of 10000 peers in %s", time.Since(start).Round(time.Millisecond))
	got, err := r.client.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for name, u := range set {
		if g := got[name]; g.Version != u.Version || VersionOf(g.Peers) != u.Version {
			t.Fatalf("%s read back with version %s, peers hashing to %s, want %s", name, g.Version, VersionOf(g.Peers), u.Version)
		}
	}
	if !strings.Contains(r.nginx.ErrorLogText(), "a client request body is buffered to a temporary file") {
		t.Fatal("the body was not buffered to a file; the test does not test what it says")
	}
	_, err = r.client.Push(context.Background(), Set{"grpc_big_0": NewUpstream(manyPeers(0, 10001))}, false)
	if err == nil || !strings.Contains(err.Error(), "upstreams.grpc_big_0.peers: 10001 peers, more than 10000") {
		t.Fatalf("10001 peers: %v", err)
	}
}

// A set larger than the shared dict is an error naming the upstream that did
// not fit: nothing held is evicted to make room, and an upstream whose new
// version does not fit keeps its old one.
func TestNoMemoryEvictsNothing(t *testing.T) {
	alpha := testrig.StartGreeter(t, "alpha", "v1")
	r := startRig(t, rigOptions{workers: 2, dictSize: "1m"}, "grpc_x")
	x := NewUpstream([]Peer{peerOf(alpha, 1)})
	r.push(Set{"grpc_x": x}, false)
	big := Set{}
	for u := range 3 { // about 600 kB each
		big[fmt.Sprintf("grpc_big_%02d", u)] = NewUpstream(manyPeers(u, 10000))
	}
	noMemory := regexp.MustCompile(`500 Internal Server Error: upstreams\.(grpc_big_\d+): no memory$`)
	_, err := r.client.Push(context.Background(), big, false)
	if err == nil || !noMemory.MatchString(err.Error()) {
		t.Fatalf("push beyond the dict's size: %v", err)
	}
	t.Log(err)
	got, err := r.client.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got["grpc_x"].Version != x.Version {
		t.Fatalf("grpc_x is held at %q, want %s", got["grpc_x"].Version, x.Version)
	}
	held := ""
	for name, u := range got {
		if VersionOf(u.Peers) != u.Version || (name != "grpc_x" && u.Version != big[name].Version) {
			t.Fatalf("%s is held half written", name)
		}
		if name != "grpc_x" {
			held = name
		}
	}
	t.Logf("nginx holds %d of the 4 upstreams", len(got))
	r.untilEveryWorker("grpc_x", "alpha", 2)

	// The dict is full: a new version of a held upstream does not fit beside
	// the old one, and the old one stays.
	peers := manyPeers(0, 10000)
	for i := range peers {
		peers[i].Weight++
	}
	_, err = r.client.Push(context.Background(), Set{held: NewUpstream(peers)}, false)
	if m := noMemory.FindStringSubmatch(fmt.Sprint(err)); m == nil || m[1] != held {
		t.Fatalf("new version of %s in a full dict: %v", held, err)
	}
	after, err := r.client.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if after[held].Version != got[held].Version || len(after) != len(got) {
		t.Fatalf("after a new version of %s did not fit, nginx holds it at %s (was %s), %d upstreams (was %d)",
			held, after[held].Version, got[held].Version, len(after), len(got))
	}
}

func manyPeers(u, n int) []Peer {
	peers := make([]Peer, n)
	for i := range peers {
		peers[i] = Peer{Host: fmt.Sprintf("10.%d.%d.%d", u, i/250, i%250+1), Port: 50051, Weight: 1 + i%100, ID: fmt.Sprintf("svc-%d-%d", u, i)}
	}
	return peers
}
