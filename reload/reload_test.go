package reload

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lbctl/lbctl/internal/testrig"
	"github.com/lbctl/lbctl/render"
)

func TestApplySkipsBytesAlreadyLive(t *testing.T) {
	n := testrig.NewNginx(t)
	dest := n.WriteConf("lbctl.conf", "# same\n")
	ctl := New(Options{Nginx: nginxConfig(n)})
	res, err := ctl.Apply(context.Background(), update(dest, "# same\n", "builtin"))
	if err != nil || res.Outcome != Unchanged {
		t.Fatalf("got %+v, %v; want unchanged", res, err)
	}
}

// A killed lbctl leaves its hidden temp files next to the destinations;
// the first apply removes them, and nothing else.
func TestFirstApplyRemovesTempFilesLeftByAKilledRun(t *testing.T) {
	n := testrig.NewNginx(t)
	dest := n.WriteConf("lbctl.conf", "# same\n")
	dir := filepath.Dir(dest)
	stale := []string{filepath.Join(dir, ".lbctl.conf.lbctl-2871163"),
		filepath.Join(filepath.Dir(n.MainConf), "."+filepath.Base(n.MainConf)+".lbctl-check-99")}
	keep := []string{filepath.Join(dir, ".lbctl.conf.swp"), filepath.Join(dir, "lbctl.conf.lbctl-1"), filepath.Join(dir, ".notes.lbctl-1")}
	for _, p := range append(slices.Clone(stale), keep...) {
		if err := os.WriteFile(p, []byte("half-written"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctl := New(Options{Nginx: nginxConfig(n), Destinations: []string{dest}})
	if _, err := ctl.Apply(context.Background(), update(dest, "# same\n", "builtin")); err != nil {
		t.Fatal(err)
	}
	for _, p := range stale {
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("stale temp file %s still there (%v)", p, err)
		}
	}
	for _, p := range keep {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s is not lbctl's and must stay: %v", p, err)
		}
	}
}

func update(path, data, source string) render.Update {
	return render.Update{Files: []render.File{{Path: path, Data: []byte(data), Perms: 0o644, Source: source}}, Seen: time.Now()}
}

// startLoad runs a load generator until stopLoad or the test's end.
func TestRunRejectsBadRenderAndAppliesTheNextGoodOne(t *testing.T) {
	n := testrig.NewNginx(t)
	g := testrig.StartGreeter(t, "alpha", "v1")
	addr := testrig.LoopbackAddr(testrig.FreePort(t))
	good := "upstream u { server " + g.Addr + "; }\nserver { listen " + addr + " http2; location / { grpc_pass grpc://u; } }\n"
	dest := n.WriteConf("lbctl.conf", good)
	n.Start()
	r := &rig{t: t, nginx: n, dest: dest}
	r.m = newMetrics()
	r.ctl = New(Options{Nginx: nginxConfig(n), Metrics: r.m, Log: testLogger(t)})
	updates := make(chan render.Update, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.ctl.Run(ctx, updates) }()
	defer func() { cancel(); <-done }()

	updates <- update(dest, good+"bogus_directive on;\n", "templates/x.ctmpl")
	testrig.WaitFor(t, 10*time.Second, "the rejection to be counted", func() error {
		if counter(r.m.ValidationFailures.WithLabelValues("templates/x.ctmpl")) != 1 {
			return errors.New("not yet")
		}
		return nil
	})
	if live, _ := os.ReadFile(dest); string(live) != good {
		t.Fatalf("live file changed:\n%s", live)
	}
	updates <- update(dest, good+"# next good render\n", "templates/x.ctmpl")
	testrig.WaitFor(t, 10*time.Second, "the good render to be applied", func() error {
		if r.reloads(Applied) != 1 {
			return errors.New("not yet")
		}
		return nil
	})
	testrig.ExpectInstance(t, addr, "alpha", 5*time.Second)
}

func TestReloadRefusedByNginxIsRejectedFastAndRolledBack(t *testing.T) {
	n := testrig.NewNginx(t)
	g := testrig.StartGreeter(t, "alpha", "v1")
	addr := testrig.LoopbackAddr(testrig.FreePort(t))
	good := "upstream u { server " + g.Addr + "; }\nserver { listen " + addr + " http2; location / { grpc_pass grpc://u; } }\n"
	dest := n.WriteConf("lbctl.conf", good)
	n.Start()
	cfg := nginxConfig(n)
	cfg.ErrorLog = n.ErrorLog
	ctl := New(Options{Nginx: cfg, Log: testLogger(t)})

	// nginx -t does not bind, so a listen address someone else holds passes
	// validation and fails only when the master applies the config.
	taken := testrig.StartGreeter(t, "squatter", "v1")
	bad := good + "server { listen " + taken.Addr + " http2; location / { grpc_pass grpc://u; } }\n"
	start := time.Now()
	res, err := ctl.Apply(context.Background(), update(dest, bad, "builtin"))
	if res.Outcome != Rejected || !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "Address already in use") {
		t.Fatalf("got %+v, %v; want the master's refusal", res, err)
	}
	took := time.Since(start)
	if took > 5*time.Second {
		t.Fatalf("refusal took %s: it should not wait for the confirm timeout", took)
	}
	t.Logf("refused and rolled back in %s", took)
	if live, _ := os.ReadFile(dest); string(live) != good {
		t.Fatalf("live file not restored:\n%s", live)
	}
	testrig.ExpectInstance(t, addr, "alpha", 5*time.Second)
}
