package accesslog

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc/codes"

	"github.com/lbctl/lbctl/catalog"
	"github.com/lbctl/lbctl/internal/faultygreeter"
	"github.com/lbctl/lbctl/internal/testrig"
)

// Real nginx 1.22 and real greeters: a normal reply's grpc-status arrives as
// a trailer, an error's in a trailers-only response's headers, and a dead
// backend leaves only the HTTP status. The collector counts all three per
// tag and version and publishes them to Consul.
func TestCollectorCountsRealNginxCallsPerVersion(t *testing.T) {
	c := testrig.StartConsul(t)
	good := testrig.StartGreeter(t, "good", "v1")
	bad := faultygreeter.Start(t, "bad", "v2", 1, codes.Internal) // every call fails
	c.Register(good.Registration("greeter", "blue"))
	c.Register(bad.Registration("greeter", "green"))
	dead := testrig.FreePort(t)
	c.Register(&api.AgentServiceRegistration{ID: "greeter-dead", Name: "greeter", Address: "127.0.0.1", Port: dead,
		Tags: []string{"red"}, Meta: map[string]string{"version": "v3"}})

	n := testrig.NewNginx(t)
	logPath := filepath.Join(n.Dir, "grpc.log")
	ports := []int{testrig.FreePort(t), testrig.FreePort(t), testrig.FreePort(t)}
	conf := fmt.Sprintf("log_format %s escape=json '%s';\n", FormatName, LogFormat)
	for i, backend := range []int{good.Port, bad.Port, dead} {
		conf += fmt.Sprintf("upstream u%d { server 127.0.0.1:%d; }\nserver { listen 127.0.0.1:%d http2; access_log %s %s; location / { grpc_pass grpc://u%d; } }\n",
			i, backend, ports[i], logPath, FormatName, i)
	}
	n.WriteConf("lbctl.conf", conf)
	n.Start()

	ctx, cancel := context.WithCancel(context.Background())
	// The load balancer's watch, whose snapshots the collector reads.
	watch := catalog.NewWatcher(c.Client, []catalog.Query{{Service: "greeter"}}, slog.New(slog.DiscardHandler))
	instances := make(chan catalog.Snapshot, 1)
	watched := make(chan error, 1)
	go func() { watched <- watch.Run(ctx, instances) }()
	defer func() { cancel(); <-watched }()
	col := &Collector{Client: c.Client, LB: "lb-test", Paths: []string{logPath}, Instances: instances,
		Poll: 10 * time.Millisecond, Period: 20 * time.Millisecond, Log: slog.New(slog.DiscardHandler)}
	done := make(chan error, 1)
	go func() { done <- col.Run(ctx) }()
	defer func() { cancel(); <-done }()

	// Calls before the collector knows the instances would count as unknown:
	// keep calling until every version shows up with the expected outcome.
	want := map[string]string{"v1": "0", "v2": "13", "v3": "http_502"}
	testrig.WaitFor(t, 20*time.Second, "counts for every version in KV", func() error {
		for _, p := range ports {
			testrig.CallInstance(context.Background(), testrig.LoopbackAddr(p))
		}
		stats, err := ReadStats(context.Background(), c.Client, "greeter")
		if err != nil || len(stats) != 1 {
			return fmt.Errorf("stats %v, %v", stats, err)
		}
		for version, label := range want {
			if stats[0].Versions[version][label] == 0 {
				return fmt.Errorf("no %s outcome for %s yet: %v", label, version, stats[0].Versions)
			}
		}
		if g := stats[0].Tags["green"]; g.Errors() != g.Total() {
			return fmt.Errorf("green: %v, want all errors", g)
		}
		if b := stats[0].Tags["blue"]; b.Errors() != 0 {
			return fmt.Errorf("blue: %v, want no errors", b)
		}
		return nil
	})
	cancel()
	<-done
	done <- nil
	// Its keys go with the collector's session.
	testrig.WaitFor(t, 10*time.Second, "stats keys removed", func() error {
		if stats, _ := ReadStats(context.Background(), c.Client, "greeter"); len(stats) != 0 {
			return fmt.Errorf("%d left", len(stats))
		}
		return nil
	})
}
