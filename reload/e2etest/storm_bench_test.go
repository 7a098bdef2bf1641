package e2etest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/lbctl/lbctl/config"
	"github.com/lbctl/lbctl/internal/testrig"
	"github.com/lbctl/lbctl/loadgen"
	"github.com/lbctl/lbctl/reload"
	"github.com/lbctl/lbctl/render"
)

// BenchmarkReloadsUnderLoad reloads nginx b.N times, each reload the given
// gap after the previous one was confirmed, while 16 clients call through it,
// and reports the calls that failed. Without a gap, a reload lands while the
// clients are still resending the calls the previous reload's GOAWAY left
// unread; grpc-go retries such a call transparently only once. See
// docs/reload.md ("Reload storms").
//
//	go test ./reload/e2etest -run XXX -bench ReloadsUnderLoad -benchtime 40x
func BenchmarkReloadsUnderLoad(b *testing.B) {
	var defaults config.Config
	defaults.SetDefaults()
	for _, gap := range []time.Duration{0, defaults.Wait.BetweenReloads} {
		b.Run("gap="+gap.String(), func(b *testing.B) { reloadsUnderLoad(b, gap) })
	}
}

func reloadsUnderLoad(b *testing.B, gap time.Duration) {
	n := testrig.NewNginx(b)
	gs := []*testrig.Greeter{testrig.StartGreeter(b, "alpha", "v1"), testrig.StartGreeter(b, "beta", "v1"), testrig.StartGreeter(b, "gamma", "v1")}
	addr := testrig.LoopbackAddr(testrig.FreePort(b))
	conf := func(i int) string {
		x, y := gs[i%3], gs[(i+1)%3]
		return fmt.Sprintf("upstream u { server %s; server %s; keepalive 32; }\nserver { listen %s http2; location / { grpc_pass grpc://u; } }\n# %d\n", x.Addr, y.Addr, addr, i)
	}
	dest := n.WriteConf("lbctl.conf", conf(0))
	n.Start()
	ctl := reload.New(reload.Options{Nginx: config.Nginx{Binary: n.Bin, Config: n.MainConf, Prefix: n.Dir, PIDFile: n.PIDFile}})
	gen, err := loadgen.New(loadgen.Options{Target: addr, Clients: 16})
	if err != nil {
		b.Fatal(err)
	}
	stopLoad := gen.Start()
	testrig.WaitFor(b, 10*time.Second, "calls through nginx", func() error {
		if s := gen.Snapshot(); s.Calls < 100 || s.Failures > 0 {
			return fmt.Errorf("%d calls, %d failed", s.Calls, s.Failures)
		}
		return nil
	})
	b.ResetTimer()
	for i := range b.N {
		u := render.Update{Files: []render.File{{Path: dest, Data: []byte(conf(i + 1)), Perms: 0o644, Source: "bench"}}}
		if _, err := ctl.Apply(context.Background(), u); err != nil {
			b.Fatal(err)
		}
		time.Sleep(gap) // the pause under test, not a wait for an event
	}
	b.StopTimer()
	rep := stopLoad()
	b.ReportMetric(float64(rep.Failures), "failed-calls")
	b.ReportMetric(float64(rep.Calls), "calls")
	b.Logf("gap %s: %d reloads, %d calls, %d failed %v", gap, b.N, rep.Calls, rep.Failures, rep.Errors)
}
