package e2etest

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/lbctl/lbctl/internal/testrig"
	"github.com/lbctl/lbctl/live"
	"github.com/lbctl/lbctl/reload"
)

// liveHolds waits until nginx, read back through its push socket, holds
// exactly these backends for the greeter upstream.
func (r *rig) liveHolds(backends ...*testrig.Greeter) {
	r.t.Helper()
	client := live.NewClient(r.liveSocket)
	testrig.WaitFor(r.t, 20*time.Second, fmt.Sprintf("nginx holding %d backends", len(backends)), func() error {
		set, err := client.Read(context.Background())
		if err != nil {
			return err
		}
		var got, want []string
		for _, p := range set["grpc_greeter"].Peers {
			got = append(got, fmt.Sprintf("127.0.0.1:%d", p.Port))
		}
		for _, g := range backends {
			want = append(want, g.Addr)
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			return fmt.Errorf("nginx holds %v, want %v", got, want)
		}
		return r.ctl.Healthy()
	})
}

// Instance changes reach nginx as data: served at once, with no reload.
func TestLiveInstanceChangesAreServedWithoutAReload(t *testing.T) {
	r := newRig(t, rigOptions{live: true})
	a, b := testrig.StartGreeter(t, "alpha", "v1"), testrig.StartGreeter(t, "beta", "v1")
	r.consul.Register(a.Registration("greeter"))
	r.start()
	if !r.lb.Live() {
		t.Fatal("live upstreams off with the Lua module loaded")
	}
	testrig.ExpectInstance(t, r.addr, "alpha", 10*time.Second)

	r.consul.Register(b.Registration("greeter"))
	r.consul.Deregister("greeter-alpha")
	r.liveHolds(b)
	testrig.ExpectOnly(t, r.addr, "beta", 20, 10*time.Second)
	r.consul.Deregister("greeter-beta")
	r.liveHolds()
	if n := r.reloads(reload.Applied); n != 0 {
		t.Errorf("%d reloads for instance changes, want 0", n)
	}
	if n := counter(r.m.LiveUpdates.WithLabelValues(string(reload.Applied))); n < 2 {
		t.Errorf("%v live updates applied, want at least 2", n)
	}
}
