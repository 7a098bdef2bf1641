package registrar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/lbctl/lbctl/internal/backoff"
	"github.com/lbctl/lbctl/internal/testrig"
)

func testLogger(t *testing.T) (*slog.Logger, *testrig.LogBuffer) {
	buf := &testrig.LogBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", buf)
		}
	})
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

var fixedHost = Host{
	Hostname:       func() (string, error) { return "box1", nil },
	InterfaceAddrs: func() ([]net.Addr, error) { return nil, errors.New("no interfaces in tests") },
}

// greeterService is a registration for a real greeter on loopback with a fast grpc check.
func greeterService(t *testing.T, g *testrig.Greeter, tags ...string) Service {
	t.Helper()
	svc, err := Service{
		Name: "greeter", Address: "127.0.0.1", Port: g.Port, Tags: tags,
		Meta: map[string]string{"version": g.Version}, Weight: 5,
		Check: Check{Type: "grpc", Interval: 100 * time.Millisecond, Timeout: time.Second, TTL: 10 * time.Second},
	}.Complete(fixedHost)
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

// fast makes a registrar's retries quick for tests.
func fast(r *Registrar) *Registrar {
	r.RegisterBackoff = backoff.New(10*time.Millisecond, 100*time.Millisecond)
	r.WatchBackoff = backoff.New(10*time.Millisecond, 200*time.Millisecond)
	return r
}

// startRegistrar runs r until the test ends and returns Run's result channel.
func startRegistrar(t *testing.T, r *Registrar) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() { cancel(); err = <-done })
		return err
	}
	t.Cleanup(func() { stop() })
	return stop
}

// passingInstance returns the passing instance id of greeter, or an error saying why not.
func passingInstance(c *testrig.Consul, id string) (*api.ServiceEntry, error) {
	entries, _, err := c.Client.Health().Service("greeter", "", true, nil)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if e.Service.ID == id {
			return e, nil
		}
	}
	return nil, fmt.Errorf("%s not passing (%d passing instances)", id, len(entries))
}

func TestRegisterCheckPassesTagsMetaWeightLand(t *testing.T) {
	c := testrig.StartConsul(t)
	g := testrig.StartGreeter(t, "blue-1", "v2")
	log, _ := testLogger(t)
	svc := greeterService(t, g, "blue")
	if want := fmt.Sprintf("greeter-box1-%d", g.Port); svc.ID != want {
		t.Fatalf("default ID = %q, want %q", svc.ID, want)
	}
	r := fast(New(c.Client, svc, log))
	startRegistrar(t, r)
	<-r.Registered()

	var e *api.ServiceEntry
	testrig.WaitFor(t, 10*time.Second, "the grpc check to pass", func() (err error) {
		e, err = passingInstance(c, svc.ID)
		return err
	})
	s := e.Service
	if !slices.Equal(s.Tags, []string{"blue"}) || s.Meta["version"] != "v2" || s.Meta["weight"] != "5" ||
		s.Weights.Passing != 5 || s.Address != "127.0.0.1" || s.Port != g.Port {
		t.Fatalf("registration did not land as given: tags %v meta %v weights %+v address %s:%d",
			s.Tags, s.Meta, s.Weights, s.Address, s.Port)
	}
}

func TestReregistersWhenTheAgentForgets(t *testing.T) {
	c := testrig.StartConsul(t)
	g := testrig.StartGreeter(t, "blue-1", "v1")
	log, logs := testLogger(t)
	svc := greeterService(t, g)
	r := fast(New(c.Client, svc, log))
	startRegistrar(t, r)
	<-r.Registered()
	back := func() error {
		_, _, err := c.Client.Agent().Service(svc.ID, nil)
		return err
	}
	testrig.WaitFor(t, 5*time.Second, "registration", back)

	c.Deregister(svc.ID) // behind lbctl's back
	testrig.WaitFor(t, 5*time.Second, "re-registration after a deregister", back)

	c.Stop() // a -dev agent comes back with no data at all
	c.Start()
	testrig.WaitFor(t, 5*time.Second, "re-registration after an agent restart", back)
	testrig.WaitFor(t, 10*time.Second, "the check to pass again", func() error {
		_, err := passingInstance(c, svc.ID)
		return err
	})
	if n := strings.Count(logs.String(), "lost the registration"); n != 2 {
		t.Fatalf("logged %d losses, want 2 (deregister, restart)", n)
	}
}

// Deregister while Run still runs (its owner deregisters first, then
// ends it): Run takes the deregistration for its own, stops, and registers
// no more. It used to register the instance again, which left a stopped
// load balancer registered (TestRunServesRegistersAndDeregisters's flake).
func TestDeregisterStopsRunFromRegisteringAgain(t *testing.T) {
	c := testrig.StartConsul(t)
	g := testrig.StartGreeter(t, "blue-1", "v1")
	log, logs := testLogger(t)
	svc := greeterService(t, g)
	r := fast(New(c.Client, svc, log))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	<-r.Registered()
	if err := r.Deregister(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after Deregister: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("Run still running 10s after Deregister, its ctx live; log:\n%s", logs.String())
	}
	if _, _, err := c.Client.Agent().Service(svc.ID, nil); err == nil {
		t.Fatalf("%s registered again after Deregister; log:\n%s", svc.ID, logs.String())
	}
}

func TestTTLCheckIsHeartbeated(t *testing.T) {
	c := testrig.StartConsul(t)
	log, _ := testLogger(t)
	svc, err := Service{Name: "greeter", Address: "127.0.0.1", Port: 7000,
		Check: Check{Type: "ttl", TTL: time.Second}}.Complete(fixedHost)
	if err != nil {
		t.Fatal(err)
	}
	r := fast(New(c.Client, svc, log))
	unhealthy := make(chan struct{})
	r.Healthy = func(context.Context) error {
		select {
		case <-unhealthy:
			return errors.New("app not listening")
		default:
			return nil
		}
	}
	startRegistrar(t, r)
	testrig.WaitFor(t, 5*time.Second, "the ttl check to pass", func() error {
		_, err := passingInstance(c, svc.ID)
		return err
	})
	close(unhealthy)
	testrig.WaitFor(t, 5*time.Second, "the ttl check to fail", func() error {
		checks, _, err := c.Client.Health().Checks("greeter", nil)
		if err != nil {
			return err
		}
		if len(checks) != 1 || checks[0].Status != api.HealthCritical || checks[0].Output != "app not listening" {
			return fmt.Errorf("checks: %+v", checks)
		}
		return nil
	})
}

func TestConsulUnreachableAtStartRetriesThenSaysWhy(t *testing.T) {
	client, err := api.NewClient(&api.Config{Address: testrig.LoopbackAddr(testrig.FreePort(t))})
	if err != nil {
		t.Fatal(err)
	}
	log, buf := testLogger(t)
	svc, err := Service{Name: "greeter", Address: "127.0.0.1", Port: 7000,
		Check: Check{Type: "tcp", Interval: time.Second, Timeout: time.Second}}.Complete(fixedHost)
	if err != nil {
		t.Fatal(err)
	}
	r := fast(New(client, svc, log))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	testrig.WaitFor(t, 5*time.Second, "a retried registration", func() error {
		if !strings.Contains(buf.String(), "attempt=2") {
			return errors.New("no second attempt logged yet")
		}
		return nil
	})
	cancel()
	err = <-done
	if err == nil || !strings.Contains(err.Error(), "register greeter-box1-7000") || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("Run = %v, want an error naming the registration and the last failure", err)
	}
	select {
	case <-r.Registered():
		t.Fatal("Registered closed without a registration")
	default:
	}
}

func TestBadServicesAreRejected(t *testing.T) {
	good := Service{Name: "greeter", ID: "g1", Address: "10.0.0.1", Port: 7000,
		Check: Check{Type: "grpc", Interval: time.Second, Timeout: time.Second}}
	cases := map[string]struct {
		edit func(*Service)
		want string
	}{
		"unknown check type": {func(s *Service) { s.Check.Type = "icmp" }, `check type "icmp"`},
		"port zero":          {func(s *Service) { s.Port = 0 }, "port 0: want 1-65535"},
		"port too big":       {func(s *Service) { s.Port = 70000 }, "port 70000: want 1-65535"},
		"weight too big":     {func(s *Service) { s.Weight = 101 }, "weight 101"},
		"bad address":        {func(s *Service) { s.Address = "10.0.0.1:80" }, "address"},
		"short ttl":          {func(s *Service) { s.Check = Check{Type: "ttl", TTL: time.Millisecond} }, "check ttl"},
		"no name":            {func(s *Service) { s.Name = "" }, "service name"},
	}
	if err := good.Validate(); err != nil {
		t.Fatalf("good service rejected: %v", err)
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			s := good
			tc.edit(&s)
			if err := s.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestCompletePicksFirstNonLoopbackIPv4(t *testing.T) {
	_, ip6, _ := net.ParseCIDR("fe80::1/64")
	h := Host{
		Hostname: func() (string, error) { return "web-7", nil },
		InterfaceAddrs: func() ([]net.Addr, error) {
			return []net.Addr{
				&net.IPNet{IP: net.IPv4(127, 0, 0, 1), Mask: net.CIDRMask(8, 32)},
				ip6,
				&net.IPNet{IP: net.IPv4(172, 17, 0, 5), Mask: net.CIDRMask(16, 32)},
				&net.IPNet{IP: net.IPv4(10, 0, 0, 9), Mask: net.CIDRMask(8, 32)},
			}, nil
		},
	}
	s, err := Service{Name: "api", Port: 9000, Check: Check{Type: "tcp", Interval: time.Second, Timeout: time.Second}}.Complete(h)
	if err != nil {
		t.Fatal(err)
	}
	if s.Address != "172.17.0.5" || s.ID != "api-web-7-9000" {
		t.Fatalf("address %q id %q, want 172.17.0.5 and api-web-7-9000", s.Address, s.ID)
	}
	if _, err := FirstNonLoopbackIPv4([]net.Addr{&net.IPNet{IP: net.IPv4(127, 0, 0, 1)}}); !errors.Is(err, ErrNoAddress) {
		t.Fatalf("loopback only: err = %v, want ErrNoAddress", err)
	}
}

func TestCheckDefinitions(t *testing.T) {
	base := Service{Name: "g", ID: "g1", Address: "10.0.0.1", Port: 7000,
		Check: Check{Interval: 2 * time.Second, Timeout: time.Second, TTL: 9 * time.Second, DeregisterCriticalAfter: time.Minute}}
	cases := []struct {
		check Check
		want  func(*api.AgentServiceCheck) bool
	}{
		{Check{Type: "grpc", GRPCService: "greeter.Greeter"}, func(c *api.AgentServiceCheck) bool { return c.GRPC == "10.0.0.1:7000/greeter.Greeter" }},
		{Check{Type: "grpc"}, func(c *api.AgentServiceCheck) bool { return c.GRPC == "10.0.0.1:7000" }},
		{Check{Type: "http", HTTPPath: "healthz"}, func(c *api.AgentServiceCheck) bool { return c.HTTP == "http://10.0.0.1:7000/healthz" }},
		{Check{Type: "http", HTTPPath: "https://x/h"}, func(c *api.AgentServiceCheck) bool { return c.HTTP == "https://x/h" }},
		{Check{Type: "tcp"}, func(c *api.AgentServiceCheck) bool { return c.TCP == "10.0.0.1:7000" && c.Interval == "2s" }},
		{Check{Type: "ttl"}, func(c *api.AgentServiceCheck) bool { return c.TTL == "9s" && c.Interval == "" }},
	}
	for _, tc := range cases {
		s := base
		tc.check.Interval, tc.check.Timeout, tc.check.TTL, tc.check.DeregisterCriticalAfter = base.Check.Interval, base.Check.Timeout, base.Check.TTL, base.Check.DeregisterCriticalAfter
		s.Check = tc.check
		c := s.registration().Check
		if !tc.want(c) || c.CheckID != "service:g1" || c.DeregisterCriticalServiceAfter != "1m0s" {
			t.Errorf("%s check: got %+v", tc.check.Type, c)
		}
	}
}
