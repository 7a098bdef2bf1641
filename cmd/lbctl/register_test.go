package main

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/spf13/pflag"

	"github.com/lbctl/lbctl/config"
	"github.com/lbctl/lbctl/greeter"
	"github.com/lbctl/lbctl/internal/testrig"
	"github.com/lbctl/lbctl/lbstate"
	"github.com/lbctl/lbctl/lbstate/lbstatetest"
	"github.com/lbctl/lbctl/registrar"
)

func mapEnv(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

var testHost = registrar.Host{
	Hostname:       func() (string, error) { return "box1", nil },
	InterfaceAddrs: func() ([]net.Addr, error) { return nil, errors.New("tests set --address") },
}

// parsedRegisterOptions are register's options after parsing args as the
// command line would, with env as the environment and no config file.
func parsedRegisterOptions(t *testing.T, consulAddr string, env map[string]string, args ...string) (*registerOptions, *testrig.LogBuffer) {
	t.Helper()
	g := &globalOptions{configPath: filepath.Join(t.TempDir(), "absent.yaml"), consul: config.Consul{Address: consulAddr}}
	o := newRegisterOptions(g)
	fs := pflag.NewFlagSet("register", pflag.ContinueOnError)
	o.bindFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	logs := &testrig.LogBuffer{}
	o.changed, o.env, o.host = fs.Changed, mapEnv(env), testHost
	o.log = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("lbctl log:\n%s", logs)
		}
	})
	return o, logs
}

func TestSeedEnvironmentIsHonoured(t *testing.T) {
	env := map[string]string{"APP_NAME": "hello_server", "APP_PORT": "7777", "CONSUL_PORT": "8501",
		"TAGS": "svc1, grpc_server,", "HEALTH_CHECK_TYPE": "HTTP", "HEALTH_CHECK_ENDPOINT": "/health"}
	o, _ := parsedRegisterOptions(t, "", env)
	r, err := o.registration(nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.Name != "hello_server" || r.Port != 7777 || !slices.Equal(r.Tags, []string{"svc1", "grpc_server"}) ||
		r.Check.Type != "http" || r.Check.HTTPPath != "/health" {
		t.Fatalf("registration from the seed environment: %+v", r)
	}
	cfg, err := agentConfig(o.g, false, o.env)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Consul.Address != "127.0.0.1:8501" {
		t.Fatalf("CONSUL_PORT=8501 gave consul address %q", cfg.Consul.Address)
	}
}

// Consul's own client treats an empty CONSUL_HTTP_ADDR as unset; so does
// lbctl, and the seed's CONSUL_PORT applies.
func TestEmptyConsulHTTPAddrIsUnset(t *testing.T) {
	o, _ := parsedRegisterOptions(t, "", map[string]string{"CONSUL_HTTP_ADDR": "", "CONSUL_PORT": "8501"})
	cfg, err := agentConfig(o.g, false, o.env)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Consul.Address != "127.0.0.1:8501" {
		t.Fatalf("CONSUL_HTTP_ADDR= CONSUL_PORT=8501 gave consul address %q, want 127.0.0.1:8501", cfg.Consul.Address)
	}
	o, _ = parsedRegisterOptions(t, "", map[string]string{"CONSUL_HTTP_ADDR": "10.0.0.9:8500", "CONSUL_PORT": "8501"})
	if cfg, err = agentConfig(o.g, false, o.env); err != nil || cfg.Consul.Address != "10.0.0.9:8500" {
		t.Fatalf("a set CONSUL_HTTP_ADDR lost to CONSUL_PORT: %q, %v", cfg.Consul.Address, err)
	}
}

func TestSeedImagesWithoutACheckGetATCPCheck(t *testing.T) {
	o, _ := parsedRegisterOptions(t, "", map[string]string{"APP_NAME": "hello", "APP_PORT": "7777"})
	r, err := o.registration(nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.Check.Type != "tcp" {
		t.Fatalf("check %q, want tcp for a seed image that set no HEALTH_CHECK_TYPE", r.Check.Type)
	}
	o, _ = parsedRegisterOptions(t, "", map[string]string{"APP_NAME": "hello", "APP_PORT": "7777",
		"HEALTH_CHECK_TYPE": "grpc", "HEALTH_CHECK_ENDPOINT": "greeter.Greeter"})
	if r, _ = o.registration(nil); r.Check.Type != "grpc" || r.Check.GRPCService != "greeter.Greeter" {
		t.Fatalf("grpc check from the seed environment: %+v", r.Check)
	}
}

func TestFlagsWinOverEnvironment(t *testing.T) {
	env := map[string]string{"APP_NAME": "from-env", "APP_PORT": "1111", "TAGS": "green", "CONSUL_PORT": "8501"}
	o, _ := parsedRegisterOptions(t, "10.0.0.1:8500", env, "--name", "from-flag", "--port", "2222", "--tag", "blue",
		"--tag", "canary", "--meta", "version=v2", "--weight", "30", "--check", "grpc", "--check-grpc-service", "greeter.Greeter",
		"--check-interval", "3s", "--drain", "deregister", "--drain-timeout", "5s")
	r, err := o.registration(nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.Name != "from-flag" || r.Port != 2222 || !slices.Equal(r.Tags, []string{"blue", "canary"}) ||
		r.Meta["version"] != "v2" || r.Weight != 30 || r.Check.Type != "grpc" || r.Check.GRPCService != "greeter.Greeter" ||
		r.Check.Interval != 3*time.Second || r.Check.Timeout != time.Second || r.Drain.Mode != "deregister" || r.Drain.Timeout != 5*time.Second {
		t.Fatalf("flags did not win: %+v", r)
	}
	cfg, err := agentConfig(o.g, false, o.env)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Consul.Address != "10.0.0.1:8500" {
		t.Fatalf("--consul-addr lost to CONSUL_PORT: %q", cfg.Consul.Address)
	}
}

func TestBadRegisterInputIsAUsageError(t *testing.T) {
	cases := []struct {
		env  map[string]string
		args []string
		want string
	}{
		{nil, []string{"--name", "g", "--port", "7000", "--check", "icmp"}, `register.check.type: want one of [grpc http tcp ttl], got "icmp"`},
		{nil, []string{"--name", "g", "--port", "70000"}, "register.port: want a port 1-65535, got 70000"},
		{nil, []string{"--name", "g"}, "register.port: want a port 1-65535, got 0"},
		{map[string]string{"APP_NAME": "g", "APP_PORT": "seven"}, nil, `APP_PORT: want a port number, got "seven"`},
		{nil, []string{"--name", "g", "--port", "7000", "--drain", "pause"}, "register.drain.mode"},
		{nil, []string{"--name", "g", "--port", "7000", "--weight", "500"}, "register.weight"},
	}
	for _, tc := range cases {
		o, _ := parsedRegisterOptions(t, "", tc.env, tc.args...)
		err := runRegister(context.Background(), o, nil)
		if exitCode(err) != 2 || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v %v: err %v (exit %d), want a usage error containing %q", tc.env, tc.args, err, exitCode(err), tc.want)
		}
	}
}

func TestRegisterWithConsulDownFailsClearlyWhenStopped(t *testing.T) {
	addr := testrig.LoopbackAddr(testrig.FreePort(t))
	const token = "s3cr3t-t0ken"
	o, logs := parsedRegisterOptions(t, addr, map[string]string{"CONSUL_HTTP_TOKEN": token},
		"--name", "g", "--port", "7000", "--address", "127.0.0.1", "--check", "tcp")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runRegister(ctx, o, nil) }()
	testrig.WaitFor(t, 5*time.Second, "a failed attempt", func() error {
		if !strings.Contains(logs.String(), "registration failed; retrying") {
			return errors.New("none yet")
		}
		return nil
	})
	cancel()
	err := <-done
	if err == nil || !strings.Contains(err.Error(), "register g-box1-7000 with the Consul agent") || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("err = %v, want it to name the registration and the refused connection", err)
	}
	if strings.Contains(err.Error(), token) || strings.Contains(logs.String(), token) {
		t.Fatal("the Consul token leaked into the error or the log")
	}
}

func TestAppExitingOnItsOwnIsDeregisteredWithItsCode(t *testing.T) {
	c := testrig.StartConsul(t)
	port := testrig.FreePort(t)
	exitPort := testrig.FreePort(t)
	t.Setenv("LBCTL_TEST_APP_PORT", fmt.Sprint(port))
	t.Setenv("LBCTL_TEST_APP_EXIT_PORT", fmt.Sprint(exitPort))
	o, _ := parsedRegisterOptions(t, c.Addr, nil, "--name", "greeter", "--port", fmt.Sprint(port),
		"--address", "127.0.0.1", "--check", "ttl", "--check-ttl", "1s")
	id := fmt.Sprintf("greeter-box1-%d", port)
	done := make(chan error, 1)
	go func() {
		done <- runRegister(context.Background(), o, []string{os.Args[0], "-test.run=^TestRegisterHelperApp$"})
	}()
	testrig.WaitFor(t, 15*time.Second, "the ttl check to pass", func() error {
		entries, _, err := c.Client.Health().Service("greeter", "", true, nil)
		if err == nil && len(entries) != 1 {
			return fmt.Errorf("%d passing", len(entries))
		}
		return err
	})
	conn, err := net.Dial("tcp", testrig.LoopbackAddr(exitPort)) // tells the app to exit
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if code := exitCode(<-done); code != 3 {
		t.Fatalf("exit code %d, want the app's 3", code)
	}
	if _, _, err := c.Client.Agent().Service(id, nil); err == nil {
		t.Fatal("still registered after the app exited")
	}
}

// TestRegisterHelperApp is not a test: it is the app that
// TestRegisterRunsTheAppAndDrains runs as `lbctl register -- app`. It serves
// a greeter on $LBCTL_TEST_APP_PORT, stops gracefully on SIGTERM and exits 7.
// It answers as $LBCTL_TEST_APP_INSTANCE (default blue-1); with
// $LBCTL_TEST_APP_STARTS it writes there, before exiting, when each of its
// unary calls started (Unix nanoseconds, one a line).
func TestRegisterHelperApp(t *testing.T) {
	port := os.Getenv("LBCTL_TEST_APP_PORT")
	if port == "" {
		t.Skip("only runs as the app of TestRegisterRunsTheAppAndDrains")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	code := 7
	if exitPort := os.Getenv("LBCTL_TEST_APP_EXIT_PORT"); exitPort != "" {
		// Exit with 3 on its own when the test connects to exitPort.
		ctl, err := net.Listen("tcp", "127.0.0.1:"+exitPort)
		if err != nil {
			fmt.Fprintln(os.Stderr, "helper app:", err)
			os.Exit(1)
		}
		ctx, stop = context.WithCancel(ctx)
		go func() {
			if conn, err := ctl.Accept(); err == nil {
				conn.Close()
				code = 3
				stop()
			}
		}()
	}
	lis, err := net.Listen("tcp", "127.0.0.1:"+port)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper app:", err)
		os.Exit(1)
	}
	srv := &greeter.Server{Instance: cmp.Or(os.Getenv("LBCTL_TEST_APP_INSTANCE"), "blue-1"), Version: "v1"}
	var mu sync.Mutex
	var starts []int64
	srv.OnCall = func() {
		now := time.Now().UnixNano()
		mu.Lock()
		starts = append(starts, now)
		mu.Unlock()
	}
	srv.Serve(ctx, lis)
	if path := os.Getenv("LBCTL_TEST_APP_STARTS"); path != "" {
		mu.Lock()
		var b strings.Builder
		for _, s := range starts {
			fmt.Fprintln(&b, s)
		}
		mu.Unlock()
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "helper app:", err)
			os.Exit(1)
		}
	}
	os.Exit(code)
}

func TestRegisterRunsTheAppAndDrains(t *testing.T) {
	c := testrig.StartConsul(t)
	port := testrig.FreePort(t)
	t.Setenv("LBCTL_TEST_APP_PORT", fmt.Sprint(port))
	o, logs := parsedRegisterOptions(t, c.Addr, nil, "--name", "greeter", "--port", fmt.Sprint(port),
		"--address", "127.0.0.1", "--tag", "blue", "--check-interval", "100ms", "--drain-timeout", "1m")
	id := fmt.Sprintf("greeter-box1-%d", port)
	appAddr := testrig.LoopbackAddr(port)

	// The load balancer, on seeing the instance leave, checks the app still
	// answers (it must not be stopped before the LB confirms), then confirms.
	var servedWhileDraining atomic.Bool
	var once sync.Once
	seen := false // only touched by the fake LB's goroutine
	lbstatetest.Start(t, c.Client, "lb-1", "greeter", o.log, func(entries []*api.ServiceEntry) {
		if slices.ContainsFunc(entries, func(e *api.ServiceEntry) bool { return e.Service.ID == id }) {
			seen = true
			return
		}
		if !seen {
			return
		}
		once.Do(func() {
			_, err := testrig.CallInstance(context.Background(), appAddr)
			servedWhileDraining.Store(err == nil)
		})
	})

	ctx, sigterm := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runRegister(ctx, o, []string{os.Args[0], "-test.run=^TestRegisterHelperApp$"}) }()
	testrig.WaitFor(t, 15*time.Second, "the app to be registered and passing", func() error {
		entries, _, err := c.Client.Health().Service("greeter", "blue", true, nil)
		if err != nil {
			return err
		}
		if len(entries) != 1 || entries[0].Service.ID != id {
			return fmt.Errorf("%d passing instances", len(entries))
		}
		return nil
	})
	passingIndex := func() uint64 {
		_, meta, err := c.Client.Health().Service("greeter", "", true, nil)
		if err != nil {
			t.Fatal(err)
		}
		return meta.LastIndex
	}()
	// Each try blocks until lb-1 confirms (or 5s); it returns at once while
	// lb-1 has published nothing yet.
	testrig.WaitFor(t, 15*time.Second, "lb-1 to apply the registration", func() error {
		res, err := lbstate.NewWaiter(c.Client, o.log).Wait(context.Background(),
			lbstate.Target{Service: "greeter", Tags: []string{"blue"}, Index: passingIndex}, 5*time.Second)
		if err == nil && len(res.Confirmed) != 1 {
			return errors.New("not applied yet")
		}
		return err
	})

	sigterm()
	err := <-done
	if code := exitCode(err); code != 7 {
		t.Fatalf("exit code %d (%v), want the app's 7", code, err)
	}
	if !servedWhileDraining.Load() {
		t.Fatal("the app was not serving when the load balancer applied the maintenance")
	}
	if _, _, err := c.Client.Agent().Service(id, nil); err == nil {
		t.Fatal("the instance is still registered after the drain")
	}
	log := logs.String()
	for _, want := range []string{"drained: every load balancer confirmed", "confirmed=[lb-1]", "app exited", "deregistered"} {
		if !strings.Contains(log, want) {
			t.Fatalf("log lacks %q", want)
		}
	}
	if strings.Index(log, "drained:") > strings.Index(log, "app exited") {
		t.Fatal("the app exited before the drain completed")
	}
}

func TestMaintAndDeregisterCommands(t *testing.T) {
	c := testrig.StartConsul(t)
	c.Register(&api.AgentServiceRegistration{ID: "g-1", Name: "greeter", Port: 7000})
	var out bytes.Buffer
	o := &agentCmdOptions{g: &globalOptions{configPath: filepath.Join(t.TempDir(), "absent.yaml")},
		serviceID: "g-1", reason: "deploy", changed: func(string) bool { return false },
		env: mapEnv(map[string]string{"CONSUL_HTTP_ADDR": c.Addr}), out: &out}
	ctx := context.Background()
	maintChecks := func() int {
		checks, _, err := c.Client.Health().Checks("greeter", nil)
		if err != nil {
			t.Fatal(err)
		}
		return len(checks)
	}
	if err := runMaint(ctx, o, "on"); err != nil {
		t.Fatal(err)
	}
	if maintChecks() != 1 {
		t.Fatal("maint on added no maintenance check")
	}
	if err := runMaint(ctx, o, "off"); err != nil {
		t.Fatal(err)
	}
	if maintChecks() != 0 {
		t.Fatal("maint off left the maintenance check")
	}
	if err := runMaint(ctx, o, "maybe"); exitCode(err) != 2 {
		t.Fatalf("maint maybe: %v, want a usage error", err)
	}
	if err := runDeregister(ctx, o); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Client.Agent().Service("g-1", nil); err == nil {
		t.Fatal("still registered after deregister")
	}
	if got := out.String(); got != "maintenance on: g-1\nmaintenance off: g-1\nderegistered: g-1\n" {
		t.Fatalf("output %q", got)
	}
	o.serviceID = ""
	if err := runDeregister(ctx, o); exitCode(err) != 2 {
		t.Fatalf("deregister without --service-id: %v, want a usage error", err)
	}
	o.serviceID = "nope"
	if err := runMaint(ctx, o, "on"); err == nil {
		t.Fatal("maint on an unknown instance succeeded")
	}
}

func TestAppThatCannotStartExits127(t *testing.T) {
	c := testrig.StartConsul(t)
	o, _ := parsedRegisterOptions(t, c.Addr, nil, "--name", "greeter", "--port", "7000", "--address", "127.0.0.1")
	err := runRegister(context.Background(), o, []string{filepath.Join(t.TempDir(), "no-such-app")})
	if exitCode(err) != 127 || !strings.Contains(err.Error(), "start the app") {
		t.Fatalf("err %v (exit %d), want exit 127 saying the app could not start", err, exitCode(err))
	}
}

func TestRegisterWithoutAppKeepsItUntilSIGTERMThenDrainsAndDeregisters(t *testing.T) {
	c := testrig.StartConsul(t)
	g := testrig.StartGreeter(t, "blue-1", "v1")
	o, logs := parsedRegisterOptions(t, c.Addr, nil, "--name", "greeter", "--port", fmt.Sprint(g.Port),
		"--address", "127.0.0.1", "--check", "tcp", "--drain", "deregister")
	id := fmt.Sprintf("greeter-box1-%d", g.Port)
	ctx, sigterm := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runRegister(ctx, o, nil) }()
	testrig.WaitFor(t, 10*time.Second, "the tcp check to pass", func() error {
		entries, _, err := c.Client.Health().Service("greeter", "", true, nil)
		if err == nil && len(entries) != 1 {
			return fmt.Errorf("%d passing", len(entries))
		}
		return err
	})
	sigterm()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Client.Agent().Service(id, nil); err == nil {
		t.Fatal("still registered after SIGTERM")
	}
	if !strings.Contains(logs.String(), "drained: every load balancer confirmed") {
		t.Fatal("no drain logged")
	}
}
