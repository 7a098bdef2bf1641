package live

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/lbctl/lbctl/internal/testrig"
)

// Push, read back, and the very next call in every worker uses the new set.
func TestPushThenEveryWorkerServesTheNewSetAtOnce(t *testing.T) {
	alpha := testrig.StartGreeter(t, "alpha", "v1")
	beta := testrig.StartGreeter(t, "beta", "v1")
	r := startRig(t, rigOptions{workers: 2}, "grpc_x")

	first := Set{"grpc_x": NewUpstream([]Peer{peerOf(alpha, 1)})}
	r.push(first, false)
	got, err := r.client.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got["grpc_x"].Version != first["grpc_x"].Version || len(got["grpc_x"].Peers) != 1 || got["grpc_x"].Peers[0] != first["grpc_x"].Peers[0] {
		t.Fatalf("read back %+v, want %+v", got, first)
	}
	// Both workers have decoded alpha and cached it.
	r.untilEveryWorker("grpc_x", "alpha", 2)

	r.push(Set{"grpc_x": NewUpstream([]Peer{peerOf(beta, 1)})}, false)
	t.Logf("calls by worker after the push, on fresh connections, all answered by beta: %v", r.untilEveryWorker("grpc_x", "beta", 2))
}

// A malformed payload is refused whole, with what was wrong and where, and the
// last good set keeps serving.
func TestMalformedPushIsRejectedAndLastGoodSetServes(t *testing.T) {
	alpha := testrig.StartGreeter(t, "alpha", "v1")
	beta := testrig.StartGreeter(t, "beta", "v1")
	r := startRig(t, rigOptions{workers: 2}, "grpc_x")
	good := Set{"grpc_x": NewUpstream([]Peer{peerOf(alpha, 1)})}
	r.push(good, false)

	const v = `"version":"0123456789abcdef"`
	ok := fmt.Sprintf(`{"host":"127.0.0.1","port":%d,"weight":1}`, beta.Port)
	upstream := func(peer string) string {
		return `{"upstreams":{"grpc_x":{` + v + `,"peers":[` + ok + `,` + peer + `]}}}`
	}
	for _, c := range []struct{ body, want string }{
		{upstream(`{"host":"127.0.0.2","port":70000,"weight":1}`), `upstreams.grpc_x.peers[1].port: 70000 is not 1-65535`},
		{upstream(`{"host":"127.0.0.2","port":0,"weight":1}`), `peers[1].port: 0 is not 1-65535`},
		{upstream(`{"host":"127.0.0.2","port":"80","weight":1}`), `peers[1].port: "80" is not 1-65535`},
		{upstream(`{"host":"127.0.0.2","port":80.5,"weight":1}`), `peers[1].port: 80.5 is not 1-65535`},
		{upstream(`{"host":"127.0.0.2","weight":1}`), `peers[1].port: nil is not 1-65535`},
		{upstream(`{"host":"example.com","port":80,"weight":1}`), `peers[1].host: "example.com" is not an IPv4 or IPv6 literal`},
		{upstream(`{"host":"256.0.0.1","port":80,"weight":1}`), `peers[1].host: "256.0.0.1" is not`},
		{upstream(`{"host":"010.0.0.1","port":80,"weight":1}`), `peers[1].host: "010.0.0.1" is not`},
		{upstream(`{"host":"1.2.3","port":80,"weight":1}`), `peers[1].host: "1.2.3" is not`},
		{upstream(`{"host":"[::1]","port":80,"weight":1}`), `peers[1].host: "[::1]" is not`},
		{upstream(`{"host":"fe80::1%eth0","port":80,"weight":1}`), `peers[1].host: "fe80::1%eth0" is not`},
		{upstream(`{"host":"1::2::3","port":80,"weight":1}`), `peers[1].host: "1::2::3" is not`},
		{upstream(`{"host":"1:2:3:4:5:6:7:8:9","port":80,"weight":1}`), `peers[1].host: "1:2:3:4:5:6:7:8:9" is not`},
		{upstream(`{"host":"10.0.0.1:80; } server { listen 9999; } upstream y { server 10.0.0.1","port":80,"weight":1}`),
			`peers[1].host: "10.0.0.1:80; } server { listen 9999; } upstream y { server 10.0...." is not an IPv4 or IPv6 literal`},
		{upstream(`{"host":"127.0.0.2","port":80,"weight":0}`), `peers[1].weight: 0 is not 1-10000`},
		{upstream(`{"host":"127.0.0.2","port":80,"weight":10001}`), `peers[1].weight: 10001 is not 1-10000`},
		{upstream(`{"host":"127.0.0.2","port":80,"weight":1.5}`), `peers[1].weight: 1.5 is not 1-10000`},
		{upstream(`{"host":"127.0.0.2","port":80,"weight":null}`), `peers[1].weight: null is not 1-10000`},
		{upstream(`{"host":"127.0.0.2","port":80,"weight":1,"id":"a b"}`), `peers[1].id: "a b" is not a plain`},
		{upstream(`{"host":"127.0.0.2","port":80,"weight":1,"backup":true}`), `peers[1]: unknown field "backup"`},
		{upstream(fmt.Sprintf(`{"host":"127.0.0.1","port":%d,"weight":3}`, beta.Port)), `peers[1]: "127.0.0.1" port ` + strconv.Itoa(beta.Port) + ` repeats peers[0]`},
		{upstream(`"127.0.0.2:80"`), `peers[1]: "127.0.0.2:80" is not an object`},
		{`{"upstreams":{"grpc_x":{` + v + `,"peers":"x"}}}`, `upstreams.grpc_x.peers: "x" is not an array`},
		{`{"upstreams":{"grpc_x":{` + v + `,"peers":{"a":1}}}}`, `upstreams.grpc_x.peers: an object is not an array`},
		{`{"upstreams":{"grpc_x":{"version":"abc","peers":[]}}}`, `upstreams.grpc_x.version: "abc" is not 16 lowercase hex digits`},
		{`{"upstreams":{"grpc_x":{"version":"0123456789ABCDEF","peers":[]}}}`, `version: "0123456789ABCDEF" is not 16 lowercase hex digits`},
		{`{"upstreams":{"grpc-x":{` + v + `,"peers":[]}}}`, `upstreams: name "grpc-x" is not 1-200 of [A-Za-z0-9_]`},
		{`{"upstreams":[1]}`, `upstreams: an array is not an object`},
		{`{"upstreams":{}, "prune":"yes"}`, `prune: "yes" is not true or false`},
		{`{"upstreams":{}, "extra":1}`, `unknown field "extra"`},
		{`["upstreams"]`, `body is not a JSON object`},
		{`{"upstreams":`, `body is not JSON`},
		{``, `body is not JSON`},
		{`{"upstreams":{"grpc_x":{"version":"0123456789abcdef","peers":[NaN]}}}`, `body is not JSON`},
		// A good new grpc_x beside a bad grpc_y: nothing is written.
		{`{"upstreams":{"grpc_x":{` + v + `,"peers":[` + ok + `]},"grpc_y":{` + v + `,"peers":[{"host":"x","port":1,"weight":1}]}}}`,
			`upstreams.grpc_y.peers[0].host: "x" is not`},
	} {
		err := r.client.do(context.Background(), http.MethodPost, []byte(c.body), &struct{}{})
		var rej *RejectedError
		if !errors.As(err, &rej) {
			t.Fatalf("%s: got %v, want a RejectedError", c.body, err)
		}
		if !strings.Contains(rej.Reason, c.want) {
			t.Errorf("%s:\n got %q\nwant it to contain %q", c.body, rej.Reason, c.want)
		}
	}
	// Through Push too, from Go values.
	bad := Set{"grpc_x": NewUpstream([]Peer{{Host: "127.0.0.1", Port: 70000, Weight: 1}})}
	_, err := r.client.Push(context.Background(), bad, true)
	var rej *RejectedError
	if !errors.As(err, &rej) || rej.Reason != "upstreams.grpc_x.peers[0].port: 70000 is not 1-65535" {
		t.Fatalf("push of port 70000: %v", err)
	}
	t.Log(err)

	held, err := r.client.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(held) != 1 || held["grpc_x"].Version != good["grpc_x"].Version {
		t.Fatalf("after refused pushes nginx holds %+v, want %+v", held, good)
	}
	r.untilEveryWorker("grpc_x", "alpha", 2)
	if !strings.Contains(r.nginx.ErrorLogText(), "lbctl_live: refused push: upstreams.grpc_x.peers[1].port: 70000 is not 1-65535") {
		t.Error("the error log does not say why the push was refused")
	}
}

// The API serves one path and two methods.
func TestAPIPathsAndMethods(t *testing.T) {
	r := startRig(t, rigOptions{}, "grpc_x")
	for _, c := range []struct {
		method, path string
		want         int
	}{
		{"GET", "/v1/upstreams", 200}, {"GET", "/", 404}, {"POST", "/v1/upstreams/x", 404},
		{"PUT", "/v1/upstreams", 405}, {"DELETE", "/v1/upstreams", 405},
	} {
		req, _ := http.NewRequest(c.method, "http://lbctl-live"+c.path, nil)
		resp, err := r.client.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s %s: %s %s, want %d", c.method, c.path, resp.Status, body, c.want)
		}
	}
	held, err := r.client.Push(context.Background(), Set{}, true)
	if err != nil || len(held) != 0 {
		t.Fatalf("empty push: %v %v", held, err)
	}
}
