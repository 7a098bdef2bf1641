package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/lbctl/lbctl/internal/testrig"
	"github.com/lbctl/lbctl/lbstate"
	"github.com/lbctl/lbctl/loadgen"
)

// lbRunConfig is an lbctl run config: nginx as a supervised program gated on
// the first render, one service, and the load balancer registering itself.
func lbRunConfig(c *testrig.Consul, n *testrig.Nginx, lb string) string {
	return fmt.Sprintf(`consul: {address: %q}
%slb_id: lb-test
services: [{name: greeter, listen: %q, shift: true}]
%sregister:
  name: grpc-lb
  address: 127.0.0.1
  port: %s
  check: {type: tcp}
`, c.Addr, nginxYAML(n), lb, nginxProgramYAML(n), lb[strings.LastIndex(lb, ":")+1:])
}

// nginxProgramYAML is the programs section that runs n supervised, gated on
// the first render, as lbctl run's config does.
func nginxProgramYAML(n *testrig.Nginx) string {
	return fmt.Sprintf(`programs:
  - name: nginx
    command: [%q, -p, %q, -c, %q, -g, "daemon off;"]
    wait_for_gates: [first-render]
    stopsignal: QUIT
    essential: true
`, n.Bin, n.Dir, n.MainConf)
}

// lbctl run: nginx starts only after the first render, serves Consul's
// instances and follows changes; the load balancer registers itself and
// publishes what it serves; on shutdown it is deregistered and nginx stops.
func TestRunServesRegistersAndDeregisters(t *testing.T) {
	c := testrig.StartConsul(t)
	a := testrig.StartGreeter(t, "alpha", "v1")
	b := testrig.StartGreeter(t, "beta", "v1")
	c.Register(a.Registration("greeter"))
	n := testrig.NewNginx(t)
	lb := testrig.LoopbackAddr(testrig.FreePort(t))
	cfg, socket := supervisedConfig(t, lbRunConfig(c, n, lb))
	cancel, result := startRun(t, cfg, socket)

	testrig.ExpectInstance(t, lb, "alpha", 10*time.Second)
	c.Register(b.Registration("greeter"))
	c.Deregister("greeter-alpha")
	testrig.ExpectOnly(t, lb, "beta", 10, 10*time.Second)

	testrig.WaitFor(t, 10*time.Second, "the LB registered and its drain key published", func() error {
		entries, _, err := c.Client.Health().Service("grpc-lb", "", true, nil)
		if err != nil || len(entries) != 1 {
			return fmt.Errorf("grpc-lb passing: %d (%v)", len(entries), err)
		}
		kv, _, err := c.Client.KV().Get(lbstate.Prefix+"lb-test", nil)
		if err != nil || kv == nil {
			return fmt.Errorf("no %slb-test key (%v)", lbstate.Prefix, err)
		}
		return nil
	})

	out, err := runLbctl(context.Background(), "status", "-c", cfg)
	if err != nil {
		t.Fatalf("lbctl status: %v", err)
	}
	for _, want := range []string{"nginx", "RUNNING", "greeter: no shift recorded", "greeter-beta", "version v1"} {
		if !strings.Contains(out, want) {
			t.Fatalf("lbctl status printed:\n%s\nwant %q in it", out, want)
		}
	}

	cancel()
	if err := waitResult(t, result); err != nil {
		t.Fatalf("lbctl run: %v", err)
	}
	services, err := c.Client.Agent().Services()
	if err != nil {
		t.Fatal(err)
	}
	for id, s := range services {
		if s.Service == "grpc-lb" {
			t.Fatalf("%s still registered after lbctl run stopped", id)
		}
	}
	if _, err := testrig.CallInstance(context.Background(), lb); err == nil {
		t.Fatal("nginx still answers after lbctl run stopped")
	}
}

// consulErrors reads lbctl_consul_errors_total from lbctl run's /metrics.
func consulErrors(addr string) (float64, error) {
	return testrig.Metric(addr, "lbctl_consul_errors_total")
}

// A real lbctl run counts its failed Consul requests: with Consul stopped
// under it, lbctl_consul_errors_total on /metrics (http.address) rises.
func TestRunCountsConsulErrorsOnMetrics(t *testing.T) {
	c := testrig.StartConsul(t)
	a := testrig.StartGreeter(t, "alpha", "v1")
	c.Register(a.Registration("greeter"))
	n := testrig.NewNginx(t)
	lb := testrig.LoopbackAddr(testrig.FreePort(t))
	httpAddr := testrig.LoopbackAddr(testrig.FreePort(t))
	src := lbRunConfig(c, n, lb)
	src = src[:strings.Index(src, "register:")] + fmt.Sprintf("http: {address: %q}\n", httpAddr)
	cfg, socket := supervisedConfig(t, src)
	cancel, result := startRun(t, cfg, socket)

	testrig.ExpectInstance(t, lb, "alpha", 10*time.Second)
	before, err := consulErrors(httpAddr)
	if err != nil {
		t.Fatal(err)
	}
	c.Stop()
	testrig.WaitFor(t, 20*time.Second, "lbctl_consul_errors_total to rise", func() error {
		now, err := consulErrors(httpAddr)
		if err != nil {
			return err
		}
		if now <= before {
			return fmt.Errorf("lbctl_consul_errors_total %v, %v before Consul stopped", now, before)
		}
		t.Logf("lbctl_consul_errors_total %v before Consul stopped, %v after", before, now)
		return nil
	})
	cancel()
	if err := waitResult(t, result); err != nil {
		t.Fatalf("lbctl run: %v", err)
	}
}

// SIGHUP re-reads the whole config: a service added to lbctl.yaml is
// rendered, validated and served; a changed key lbctl cannot apply live is
// logged as needing a restart; an invalid file is logged with its line and
// changes nothing. Calls flowing through nginx meanwhile never fail.
func TestSIGHUPAppliesServicesAndRefusesAnInvalidFile(t *testing.T) {
	c := testrig.StartConsul(t)
	a := testrig.StartGreeter(t, "alpha", "v1")
	b := testrig.StartGreeter(t, "beta", "v1")
	c.Register(a.Registration("greeter"))
	c.Register(b.Registration("billing"))
	n := testrig.NewNginx(t)
	lb := testrig.LoopbackAddr(testrig.FreePort(t))
	src := lbRunConfig(c, n, lb)
	src = src[:strings.Index(src, "register:")]
	cfgPath, _ := supervisedConfig(t, src)
	var logs testrig.LogBuffer
	o, ctx := runInProcess(t, cfgPath, slog.New(slog.NewTextHandler(&logs, nil)))
	testrig.ExpectInstance(t, lb, "alpha", 10*time.Second)
	gen, err := loadgen.New(loadgen.Options{Target: lb, Clients: 4})
	if err != nil {
		t.Fatal(err)
	}
	stopLoad := gen.Start()
	defer stopLoad()

	billing := testrig.LoopbackAddr(testrig.FreePort(t))
	added := strings.Replace(src, "services: [", fmt.Sprintf("wait: {min: 20ms}\nservices: [{name: billing, listen: %q}, ", billing), 1)
	if err := os.WriteFile(cfgPath, []byte(added), 0o644); err != nil {
		t.Fatal(err)
	}
	o.reload(ctx, nil)
	testrig.ExpectInstance(t, billing, "beta", 10*time.Second)
	if !strings.Contains(logs.String(), `msg="SIGHUP: changed, needs a restart" key=wait`) {
		t.Fatalf("the wait change was not logged as needing a restart:\n%s", logs.String())
	}

	broken := strings.Replace(added, "listen: ", "lisen: ", 1)
	if err := os.WriteFile(cfgPath, []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	o.reload(ctx, nil)
	if !strings.Contains(logs.String(), `lbctl.yaml:`) || !strings.Contains(logs.String(), `unknown key \"lisen\"`) {
		t.Fatalf("the invalid file was not logged with its line:\n%s", logs.String())
	}
	testrig.ExpectInstance(t, billing, "beta", 10*time.Second)
	testrig.ExpectInstance(t, lb, "alpha", 10*time.Second)
	rep := stopLoad()
	t.Logf("load across both SIGHUPs: %d calls, %d failed", rep.Calls, rep.Failures)
	if rep.Calls == 0 || rep.Failures != 0 {
		t.Fatalf("load saw failures: %+v", rep)
	}
}
