package reload

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/lbctl/lbctl/config"
	"github.com/lbctl/lbctl/internal/testrig"
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

// liveConf is a temp dir for the live files and, in it, the services
// config file a live-mode update writes ("# live").
func liveConf(t *testing.T) (dir, dest string) {
	t.Helper()
	dir = t.TempDir()
	dest = filepath.Join(dir, "lbctl.conf")
	if err := os.WriteFile(dest, []byte("# live\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, dest
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
// seed file is written (in the background): the disk is not in the path of
// a push. The seed then comes to hold what was pushed, and it is written
// when no nginx runs too, for the one that starts.
func TestLivePushComesBeforeTheSeedFile(t *testing.T) {
	dir, dest := liveConf(t)
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
	t.Cleanup(ctl.WaitSeed) // the seed is written in the background, into t.TempDir
	apply := func(port int) Result {
		t.Helper()
		set := live.Set{"grpc_greeter": live.NewUpstream([]live.Peer{{Host: "127.0.0.1", Port: port, Weight: 1}})}
		res, err := ctl.Apply(context.Background(), render.Update{Files: []render.File{{Path: dest, Data: []byte("# live\n")}}, Live: set})
		if err != nil {
			t.Fatal(err)
		}
		testrig.WaitFor(t, 10*time.Second, "the seed file to hold the set applied", func() error {
			b, _ := os.ReadFile(n.LiveSeed())
			if got, want := seedVersion(t, string(b)), set["grpc_greeter"].Version; got != want {
				return fmt.Errorf("seed holds version %q, want %q", got, want)
			}
			return nil
		})
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
	dir, dest := liveConf(t)
	p := &refusingPusher{refusals: 3}
	ctl := New(Options{Nginx: config.Nginx{Config: dest, LiveUpstreams: true, LiveDir: dir}, Live: p,
		MasterPID: func() (int, error) { return 4242, nil }})
	t.Cleanup(ctl.WaitSeed) // the seed is written in the background, into t.TempDir
	set := live.Set{"grpc_greeter": live.NewUpstream([]live.Peer{{Host: "127.0.0.1", Port: 7001, Weight: 1}})}
	res, err := ctl.Apply(context.Background(), render.Update{Files: []render.File{{Path: dest, Data: []byte("# live\n")}}, Live: set})
	if err != nil || res.Live != Applied || p.calls != 4 {
		t.Fatalf("live %s after %d tries, %v; want applied on the 4th", res.Live, p.calls, err)
	}
}

// dictPusher holds upstreams as nginx's shared dict does (a push without
// prune keeps the upstreams it does not list) and records each push.
type dictPusher struct {
	held   live.Set
	pushes []recordedPush
	fail   bool // the next push fails after it landed (its answer is lost)
}

type recordedPush struct {
	names []string
	prune bool
}

func (p *dictPusher) Push(_ context.Context, set live.Set, prune bool) (map[string]string, error) {
	if prune || p.held == nil {
		p.held = live.Set{}
	}
	rec := recordedPush{prune: prune}
	for name, u := range set {
		p.held[name] = u
		rec.names = append(rec.names, name)
	}
	slices.Sort(rec.names)
	p.pushes = append(p.pushes, rec)
	if p.fail {
		p.fail = false
		return nil, errors.New("connection reset")
	}
	versions := map[string]string{}
	for name, u := range p.held {
		versions[name] = u.Version
	}
	return versions, nil
}

// An instance change pushes only the upstreams whose version changed, to
// the nginx that confirmed the rest; a new master, or a push whose outcome
// is not known, gets the whole set again.
func TestLivePushSendsOnlyChangedUpstreamsToTheNginxThatHoldsTheRest(t *testing.T) {
	dir, dest := liveConf(t)
	p := &dictPusher{}
	master := 4242
	ctl := New(Options{Nginx: config.Nginx{Config: dest, LiveUpstreams: true, LiveDir: dir}, Live: p,
		MasterPID: func() (int, error) { return master, nil }})
	t.Cleanup(ctl.WaitSeed) // the seed is written in the background, into t.TempDir
	apply := func(a, b int) error {
		set := live.Set{
			"grpc_a": live.NewUpstream([]live.Peer{{Host: "127.0.0.1", Port: a, Weight: 1}}),
			"grpc_b": live.NewUpstream([]live.Peer{{Host: "127.0.0.1", Port: b, Weight: 1}}),
		}
		_, err := ctl.Apply(context.Background(), render.Update{Files: []render.File{{Path: dest, Data: []byte("# live\n")}}, Live: set})
		return err
	}
	last := func() recordedPush { return p.pushes[len(p.pushes)-1] }

	if err := apply(7001, 8001); err != nil || !slices.Equal(last().names, []string{"grpc_a", "grpc_b"}) || !last().prune {
		t.Fatalf("first push %+v, %v; want both upstreams, pruning", last(), err)
	}
	if err := apply(7002, 8001); err != nil || !slices.Equal(last().names, []string{"grpc_a"}) || last().prune {
		t.Fatalf("push after one change %+v, %v; want grpc_a alone, not pruning", last(), err)
	}
	p.fail = true
	if err := apply(7003, 8001); err == nil {
		t.Fatal("a push whose answer was lost was taken as applied")
	}
	// nginx holds 7003 for grpc_a; going back to 7002 must push it again.
	if err := apply(7002, 8001); err != nil || !slices.Equal(last().names, []string{"grpc_a", "grpc_b"}) || !last().prune {
		t.Fatalf("push after a lost answer %+v, %v; want the whole set, pruning", last(), err)
	}
	master = 4343
	if err := apply(7002, 8002); err != nil || !slices.Equal(last().names, []string{"grpc_a", "grpc_b"}) || !last().prune {
		t.Fatalf("push to a new master %+v, %v; want the whole set, pruning", last(), err)
	}
	if got := p.held["grpc_a"].Peers[0].Port; got != 7002 {
		t.Fatalf("nginx holds grpc_a on port %d, want 7002", got)
	}
}
