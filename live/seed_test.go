package live

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/lbctl/lbctl/internal/testrig"
)

// nginx started with a seed file serves the seed from its first call; after a
// reload (HUP) the shared dict keeps what was pushed since, and the seed only
// fills in upstreams the dict does not hold.
func TestSeedLoadsAtStartAndPushSurvivesReload(t *testing.T) {
	alpha := testrig.StartGreeter(t, "alpha", "v1")
	beta := testrig.StartGreeter(t, "beta", "v1")
	seeded := NewUpstream([]Peer{peerOf(alpha, 1)})
	r := startRig(t, rigOptions{workers: 2, seed: Set{"grpc_x": seeded}}, "grpc_x", "grpc_y")

	// The first call after start-up, no push yet.
	if a, err := r.call("grpc_x"); err != nil || a.instance != "alpha" {
		t.Fatalf("first call: %v %+v, want alpha from the seed", err, a)
	}
	r.untilEveryWorker("grpc_x", "alpha", 2)

	// A newer push, then a reload with the seed file still saying alpha for
	// grpc_x and now naming grpc_y too.
	pushed := NewUpstream([]Peer{peerOf(beta, 1)})
	r.push(Set{"grpc_x": pushed}, false)
	if err := WriteSeed(r.seed, Set{"grpc_x": seeded, "grpc_y": seeded}); err != nil {
		t.Fatal(err)
	}
	r.reload(2)
	r.untilEveryWorker("grpc_x", "beta", 2)
	r.untilEveryWorker("grpc_y", "alpha", 2)
	got, err := r.client.Read(context.Background())
	if err != nil || got["grpc_x"].Version != pushed.Version || got["grpc_y"].Version != seeded.Version {
		t.Fatalf("after the reload nginx holds %+v (%v)", got, err)
	}
}

// A worker still finishing a call after a reload uses a push made after the
// reload for its next pick. (Its client connections get GOAWAY, so its only
// next picks are retries of calls it holds: here the first try hangs
// connecting until the peer is closed and refuses, and the retry picks again.)
func TestOldWorkerUsesNewerPush(t *testing.T) {
	alpha := testrig.StartGreeter(t, "alpha", "v1")
	beta := testrig.StartGreeter(t, "beta", "v1")
	hole1, hole2 := startBlackhole(t), startBlackhole(t)
	r := startRig(t, rigOptions{workers: 2}, "grpc_x", "grpc_w")
	r.push(Set{"grpc_w": NewUpstream([]Peer{peerOf(alpha, 1)})}, false)
	oldWorkers := r.untilEveryWorker("grpc_w", "alpha", 2)
	r.push(Set{"grpc_x": NewUpstream([]Peer{hole1.peer(), hole2.peer()})}, false)

	type result struct {
		a   answer
		err error
	}
	done := make(chan result, 1)
	go func() {
		// Long enough for a slow reload: the refusal comes with a SYN
		// retransmit, 1, 3, 7, 15 s after the first SYN.
		a, err := r.callWithin("grpc_x", 30*time.Second)
		done <- result{a, err}
	}()
	testrig.WaitFor(t, 10*time.Second, "nginx to connect to a blackhole", func() error {
		select {
		case res := <-done:
			t.Fatalf("the call ended before reaching a peer: %+v", res)
		default:
		}
		if !hole1.connecting() && !hole2.connecting() {
			return errors.New("no SYN_SENT to either")
		}
		return nil
	})
	r.reload(2)
	r.push(Set{"grpc_x": NewUpstream([]Peer{peerOf(beta, 1)})}, false)
	hole1.close()
	hole2.close()
	res := <-done
	if res.err != nil || res.a.instance != "beta" {
		t.Fatalf("the old worker's call: %v %+v, want beta\n%s", res.err, res.a, r.nginx.ErrorLogText())
	}
	if _, ok := oldWorkers[res.a.worker]; !ok {
		t.Fatalf("worker %s answered; the workers before the reload were %v", res.a.worker, oldWorkers)
	}
	t.Logf("old worker %s (of %v) retried on beta, pushed after the reload", res.a.worker, oldWorkers)
}

func TestWriteSeed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "seed.json")
	set := Set{"grpc_x": NewUpstream([]Peer{{Host: "::1", Port: 1, Weight: 2, ID: "a"}}), "grpc_y": {Version: VersionOf(nil)}}
	if err := WriteSeed(path, set); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("seed file: %v %v, want mode 0600", fi.Mode(), err)
	}
	b, _ := os.ReadFile(path)
	if !strings.Contains(string(b), `"prune":true`) || !strings.Contains(string(b), `"grpc_y":{"version":"`+VersionOf(nil)+`","peers":[]}`) {
		t.Fatalf("seed file: %s", b)
	}
	var back struct {
		Prune     bool
		Upstreams Set
	}
	if err := json.Unmarshal(b, &back); err != nil || !back.Prune || back.Upstreams["grpc_x"].Peers[0] != set["grpc_x"].Peers[0] {
		t.Fatalf("seed file reads back as %+v (%v)", back, err)
	}
}

// A Seed writes what encodePush writes, keeping the JSON of the upstreams
// whose version stayed and encoding the others anew.
func TestSeedEncodesOnlyChangedUpstreams(t *testing.T) {
	path := filepath.Join(t.TempDir(), "seed.json")
	seed := NewSeed(path)
	x1 := NewUpstream([]Peer{{Host: "::1", Port: 1, Weight: 2, ID: "a<b>"}})
	x2 := NewUpstream([]Peer{{Host: "10.0.0.1", Port: 2, Weight: 1}})
	y := Upstream{Version: VersionOf(nil)}
	for i, set := range []Set{{"grpc_x": x1, "grpc_y": y}, {"grpc_x": x2, "grpc_y": y}, {"grpc_y": y, "grpc_z": x1}} {
		before := maps.Clone(seed.entries)
		if err := seed.Write(set); err != nil {
			t.Fatal(err)
		}
		want, err := encodePush(set, true)
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(path); string(got) != string(want)+"\n" {
			t.Fatalf("write %d: seed file\n%s\nwant encodePush's\n%s", i, got, want)
		}
		if len(seed.entries) != len(set) {
			t.Fatalf("write %d: %d entries kept for %d upstreams", i, len(seed.entries), len(set))
		}
		if old, ok := before["grpc_y"]; ok && unsafe.SliceData(old.json) != unsafe.SliceData(seed.entries["grpc_y"].json) {
			t.Fatalf("write %d: grpc_y, at the same version, was encoded again", i)
		}
	}
}

func TestVersionOf(t *testing.T) {
	p := []Peer{{Host: "10.0.0.1", Port: 80, Weight: 1}, {Host: "10.0.0.2", Port: 80, Weight: 1}}
	v := VersionOf(p)
	if len(v) != 16 || strings.Trim(v, "0123456789abcdef") != "" {
		t.Fatalf("version %q is not 16 lowercase hex digits", v)
	}
	q := append([]Peer(nil), p...)
	q[1].Weight = 2
	if VersionOf(p) != v || VersionOf(q) == v || VersionOf([]Peer{p[1], p[0]}) == v {
		t.Fatal("the version does not follow the peers")
	}
	if VersionOf(nil) != VersionOf([]Peer{}) || NewUpstream(nil).Peers == nil || NewUpstream(p).Version != v {
		t.Fatal("nil peers are not the empty list")
	}
}

// The socket and seed paths are quoted for nginx and Lua.
func TestHTTPConfigQuotesPaths(t *testing.T) {
	dir := filepath.Join(t.TempDir(), `odd "dir" \ ; {x}`)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	n := testrig.NewNginxWith(t, testrig.NginxOptions{Lua: true})
	socket, seed := filepath.Join(dir, "s.sock"), filepath.Join(dir, "seed's.json")
	alpha := testrig.StartGreeter(t, "alpha", "v1")
	if err := WriteSeed(seed, Set{"grpc_x": NewUpstream([]Peer{peerOf(alpha, 1)})}); err != nil {
		t.Fatal(err)
	}
	n.WriteConf("live.conf", HTTPConfig(socket, seed, "1m"))
	if err := n.Test(); err != nil {
		t.Fatal(err)
	}
	n.Start()
	var got Set
	testrig.WaitFor(t, 10*time.Second, "the live API", func() error {
		var err error
		got, err = NewClient(socket).Read(context.Background())
		return err
	})
	if len(got["grpc_x"].Peers) != 1 {
		t.Fatalf("the seed at %q was not loaded: %+v\n%s", seed, got, n.ErrorLogText())
	}
}
