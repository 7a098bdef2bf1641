package registrar

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/lbctl/lbctl/internal/testrig"
	"github.com/lbctl/lbctl/lbstate"
	"github.com/lbctl/lbctl/lbstate/lbstatetest"
)

// registeredGreeter is a passing greeter instance registered by a Registrar
// that has then been stopped, as the shutdown sequence does before draining.
func registeredGreeter(t *testing.T, c *testrig.Consul, tags ...string) *Registrar {
	t.Helper()
	g := testrig.StartGreeter(t, "blue-1", "v1")
	log, _ := testLogger(t)
	r := fast(New(c.Client, greeterService(t, g, tags...), log))
	stop := startRegistrar(t, r)
	testrig.WaitFor(t, 10*time.Second, "the instance to pass", func() error {
		_, err := passingInstance(c, r.Service().ID)
		return err
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	return r
}

// waitPublished waits until load balancer id has published its state.
func waitPublished(t *testing.T, c *testrig.Consul, id string) {
	testrig.WaitFor(t, 5*time.Second, id+" to publish", func() error {
		pair, _, err := c.Client.KV().Get(lbstate.Prefix+id, nil)
		if err == nil && pair == nil {
			return errors.New("not published yet")
		}
		return err
	})
}

func has(entries []*api.ServiceEntry, id string) bool {
	return slices.ContainsFunc(entries, func(e *api.ServiceEntry) bool { return e.Service.ID == id })
}

func TestDrainWaitsUntilTheLoadBalancerConfirms(t *testing.T) {
	c := testrig.StartConsul(t)
	r := registeredGreeter(t, c, "blue")
	id := r.Service().ID
	log, _ := testLogger(t)

	sawMaintenance := make(chan struct{})
	release := make(chan struct{})
	var released atomic.Bool
	var once sync.Once
	lbstatetest.Start(t, c.Client, "lb-1", "greeter", log, func(entries []*api.ServiceEntry) {
		if !has(entries, id) {
			once.Do(func() {
				close(sawMaintenance) // a slow reload: hold until the test releases it
				<-release
			})
		}
	})
	// A load balancer for another service must not hold this drain.
	lbstatetest.PublishStale(t, c.Client, "lb-other", "billing", 1, log)
	waitPublished(t, c, "lb-1")

	type outcome struct {
		res             lbstate.Result
		err             error
		releasedAtOnEnd bool
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := r.Drain(context.Background(), DrainOptions{Mode: DrainMaintenance, Reason: "deploy", Timeout: time.Minute,
			Waiter: lbstate.NewWaiter(c.Client, log)})
		done <- outcome{res, err, released.Load()}
	}()
	<-sawMaintenance
	released.Store(true)
	close(release)
	o := <-done
	if o.err != nil {
		t.Fatal(o.err)
	}
	if !o.releasedAtOnEnd {
		t.Fatal("drain ended before the load balancer confirmed")
	}
	if o.res.TimedOut || !slices.Equal(o.res.Confirmed, []string{"lb-1"}) || !slices.Equal(o.res.Ignored, []string{"lb-other"}) {
		t.Fatalf("result %+v, want lb-1 confirmed and lb-other ignored", o.res)
	}
	svc, _, err := c.Client.Agent().Service(id, nil)
	if err != nil || svc == nil {
		t.Fatalf("maintenance mode should keep the instance registered: %v", err)
	}
}

func TestDrainTimeoutProceedsAndSaysSo(t *testing.T) {
	c := testrig.StartConsul(t)
	r := registeredGreeter(t, c)
	log, logs := testLogger(t)
	r.log = log
	lbstatetest.PublishStale(t, c.Client, "lb-stuck", "greeter", 1, log)

	res, err := r.Drain(context.Background(), DrainOptions{Mode: DrainMaintenance, Timeout: 500 * time.Millisecond,
		Waiter: lbstate.NewWaiter(c.Client, log)})
	if err != nil {
		t.Fatal(err)
	}
	if !res.TimedOut || !slices.Equal(res.Pending, []string{"lb-stuck"}) {
		t.Fatalf("result %+v, want a timeout with lb-stuck pending", res)
	}
	if !strings.Contains(logs.String(), "drain timed out before every load balancer confirmed; proceeding") ||
		!strings.Contains(logs.String(), "pending=[lb-stuck]") {
		t.Fatalf("the timeout was not logged with the pending load balancer:\n%s", logs)
	}
}

func TestDrainStopsWaitingForADeadLoadBalancer(t *testing.T) {
	c := testrig.StartConsul(t)
	r := registeredGreeter(t, c)
	log, _ := testLogger(t)
	stop := lbstatetest.PublishStale(t, c.Client, "lb-dying", "greeter", 1, log)

	done := make(chan lbstate.Result, 1)
	go func() {
		res, _ := r.Drain(context.Background(), DrainOptions{Mode: DrainDeregister, Timeout: time.Minute,
			Waiter: lbstate.NewWaiter(c.Client, log)})
		done <- res
	}()
	testrig.WaitFor(t, 5*time.Second, "the deregistration", func() error {
		entries, _, err := c.Client.Health().Service("greeter", "", false, nil)
		if err == nil && has(entries, r.Service().ID) {
			return context.DeadlineExceeded
		}
		return err
	})
	stop() // its session is destroyed: its state disappears
	res := <-done
	if res.TimedOut || len(res.Pending) != 0 || len(res.Confirmed) != 0 {
		t.Fatalf("result %+v, want the drain to end with no load balancer left", res)
	}
}

func TestTakeOutOfServiceReturnsTheIndexThatShowsIt(t *testing.T) {
	c := testrig.StartConsul(t)
	r := registeredGreeter(t, c)
	index, err := r.TakeOutOfService(context.Background(), DrainMaintenance, "test")
	if err != nil {
		t.Fatal(err)
	}
	entries, meta, err := c.Client.Health().Service("greeter", "", true, &api.QueryOptions{WaitIndex: 0})
	if err != nil {
		t.Fatal(err)
	}
	if has(entries, r.Service().ID) || meta.LastIndex < index {
		t.Fatalf("at index %d (>= %d) the instance should not be passing: %v", meta.LastIndex, index, has(entries, r.Service().ID))
	}
	if _, err := r.TakeOutOfService(context.Background(), "pause", ""); err == nil {
		t.Fatal("unknown drain mode accepted")
	}
	// An instance the agent has already lost counts as deregistered, in both modes.
	c.Deregister(r.Service().ID)
	for _, mode := range []string{DrainMaintenance, DrainDeregister} {
		if _, err := r.TakeOutOfService(context.Background(), mode, ""); err != nil {
			t.Fatalf("%s of a vanished instance: %v", mode, err)
		}
	}
}
