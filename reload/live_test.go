package reload

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/lbctl/lbctl/config"
	"github.com/lbctl/lbctl/live"
	"github.com/lbctl/lbctl/render"
)

// pushRecorder is a LivePusher that holds what it is pushed and records
// what the seed file held at each push.
type pushRecorder struct {
	seed        string
	seedAtPush  []string
	heldVersion map[string]string
}

func (p *pushRecorder) Push(_ context.Context, set live.Set, _ bool) (map[string]string, error) {
	b, _ := os.ReadFile(p.seed)
	p.seedAtPush = append(p.seedAtPush, string(b))
	p.heldVersion = map[string]string{}
	for name, u := range set {
		p.heldVersion[name] = u.Version
	}
	return p.heldVersion, nil
}

// seedVersion is grpc_greeter's version in the seed file's content ("" if none).
func seedVersion(t *testing.T, seed string) string {
	t.Helper()
	var body struct {
		Upstreams live.Set `json:"upstreams"`
	}
	if err := json.Unmarshal([]byte(seed), &body); err != nil {
		return ""
	}
	return body.Upstreams["grpc_greeter"].Version
}

// An instance change reaches nginx, and is reported applied, before the
// seed file is written: the disk is not in the path of a push. The seed
// then holds what was pushed, and it is written when no nginx runs too, for
// the one that starts.
func TestLivePushComesBeforeTheSeedFile(t *testing.T) {
	dir := t.TempDir()
	dest := filepath.Join(dir, "lbctl.conf")
	if err := os.WriteFile(dest, []byte("# live\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	n := config.Nginx{Config: dest, LiveUpstreams: true, LiveDir: dir}
	p := &pushRecorder{seed: n.LiveSeed()}
	master := 0
	var seedAtApplied []string
	onApplied := func(render.Update) {
		b, _ := os.ReadFile(n.LiveSeed())
		seedAtApplied = append(seedAtApplied, string(b))
	}
	ctl := New(Options{Nginx: n, Live: p, OnApplied: onApplied, MasterPID: func() (int, error) {
		if master == 0 {
			return 0, ErrNoMaster
		}
		return master, nil
	}})
	apply := func(port int) Result {
		t.Helper()
		set := live.Set{"grpc_greeter": live.NewUpstream([]live.Peer{{Host: "127.0.0.1", Port: port, Weight: 1}})}
		res, err := ctl.Apply(context.Background(), render.Update{Files: []render.File{{Path: dest, Data: []byte("# live\n")}}, Live: set})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(n.LiveSeed())
		if got, want := seedVersion(t, string(b)), set["grpc_greeter"].Version; got != want {
			t.Fatalf("seed holds version %q after the apply, want %q", got, want)
		}
		return res
	}

	if res := apply(7001); res.Live != Written || len(p.seedAtPush) != 0 {
		t.Fatalf("no nginx: live %s after %d pushes; want written, no push", res.Live, len(p.seedAtPush))
	}
	master = 4242
	prev := live.NewUpstream([]live.Peer{{Host: "127.0.0.1", Port: 7001, Weight: 1}}).Version
	for i, port := range []int{7002, 7003} {
		if res := apply(port); res.Live != Applied {
			t.Fatalf("push %d: live %s, want applied", i, res.Live)
		}
		if got := seedVersion(t, p.seedAtPush[i]); got != prev {
			t.Fatalf("push %d: the seed held version %q when nginx was pushed, want the previous set's %q", i, got, prev)
		}
		if got := seedVersion(t, seedAtApplied[i+1]); got != prev {
			t.Fatalf("push %d: the seed held version %q when the update was reported applied, want the previous set's %q", i, got, prev)
		}
		prev = p.heldVersion["grpc_greeter"]
	}
}

// refusingPusher refuses connections the first refusals times, as a push
// socket that nginx has not bound yet, then holds what it is pushed.
type refusingPusher struct{ refusals, calls int }

func (p *refusingPusher) Push(_ context.Context, set live.Set, _ bool) (map[string]string, error) {
	p.calls++
	if p.calls <= p.refusals {
		return nil, &net.OpError{Op: "dial", Net: "unix", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	}
	held := map[string]string{}
	for name, u := range set {
		held[name] = u.Version
	}
	return held, nil
}

// An nginx whose master is known but which has not bound its push socket
// yet (it just started) is pushed once it listens, not failed.
func TestLivePushWaitsForANginxThatJustStarted(t *testing.T) {
	dir := t.TempDir()
	dest := filepath.Join(dir, "lbctl.conf")
	if err := os.WriteFile(dest, []byte("# live\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := &refusingPusher{refusals: 3}
	ctl := New(Options{Nginx: config.Nginx{Config: dest, LiveUpstreams: true, LiveDir: dir}, Live: p,
		MasterPID: func() (int, error) { return 4242, nil }})
	set := live.Set{"grpc_greeter": live.NewUpstream([]live.Peer{{Host: "127.0.0.1", Port: 7001, Weight: 1}})}
	res, err := ctl.Apply(context.Background(), render.Update{Files: []render.File{{Path: dest, Data: []byte("# live\n")}}, Live: set})
	if err != nil || res.Live != Applied || p.calls != 4 {
		t.Fatalf("live %s after %d tries, %v; want applied on the 4th", res.Live, p.calls, err)
	}
}
