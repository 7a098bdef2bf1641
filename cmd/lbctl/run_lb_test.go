package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/lbctl/lbctl/internal/testrig"
	"github.com/lbctl/lbctl/lbstate"
)

// lbRunConfig is an lbctl run config: nginx as a supervised program gated on
// the first render, one service, and the load balancer registering itself.
func lbRunConfig(c *testrig.Consul, n *testrig.Nginx, lb string) string {
	return fmt.Sprintf(`consul: {address: %q}
%slb_id: lb-test
services: [{name: greeter, listen: %q, shift: true}]
programs:
  - name: nginx
    command: [%q, -p, %q, -c, %q, -g, "daemon off;"]
    wait_for_gates: [first-render]
    stopsignal: QUIT
    essential: true
register:
  name: grpc-lb
  address: 127.0.0.1
  port: %s
  check: {type: tcp}
`, c.Addr, nginxYAML(n), lb, n.Bin, n.Dir, n.MainConf, lb[strings.LastIndex(lb, ":")+1:])
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
