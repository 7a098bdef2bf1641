package consulresolver_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/lbctl/lbctl/consulresolver"
	"github.com/lbctl/lbctl/greeter"
	"github.com/lbctl/lbctl/internal/testrig"
)

// A client resolving through Consul reaches only the tagged instances, all of
// them (round robin), and stops calling an instance once it is deregistered.
func TestClientFollowsConsul(t *testing.T) {
	c := testrig.StartConsul(t)
	a := testrig.StartGreeter(t, "alpha", "v1")
	b := testrig.StartGreeter(t, "beta", "v1")
	g := testrig.StartGreeter(t, "gamma", "v2")
	c.Register(a.Registration("greeter", "blue"))
	c.Register(b.Registration("greeter", "blue"))
	c.Register(g.Registration("greeter", "green"))

	conn, client, err := greeter.Dial(fmt.Sprintf("consul://%s/greeter?tag=blue", c.Addr),
		grpc.WithResolvers(consulresolver.NewBuilder(slog.New(slog.DiscardHandler))),
		grpc.WithDefaultServiceConfig(consulresolver.RoundRobin))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	seen := func() map[string]int {
		got := map[string]int{}
		for i := 0; i < 20; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			r, err := greeter.Hello(ctx, client, "t")
			cancel()
			if err != nil {
				t.Fatalf("call %d: %v", i, err)
			}
			got[r.GetInstance()]++
		}
		return got
	}
	testrig.WaitFor(t, 10*time.Second, "both blue instances to answer", func() error {
		if got := seen(); got["alpha"] == 0 || got["beta"] == 0 || got["gamma"] != 0 {
			return fmt.Errorf("answers %v, want alpha and beta only", got)
		}
		return nil
	})
	c.Deregister("greeter-alpha")
	testrig.WaitFor(t, 10*time.Second, "alpha to leave the balancer", func() error {
		if got := seen(); got["alpha"] != 0 || got["beta"] != 20 {
			return fmt.Errorf("answers %v, want beta only", got)
		}
		return nil
	})
}
