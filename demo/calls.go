package demo

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"

	"github.com/lbctl/lbctl/consulresolver"
	"github.com/lbctl/lbctl/greeter"
	"github.com/lbctl/lbctl/loadgen"
)

// awaitServing waits until calls through the load balancer reach every instance.
func (s *stack) awaitServing(ctx context.Context, instances ...string) error {
	return waitUntil(30*time.Second, "the load balancer to serve "+strings.Join(instances, ", "), func() error {
		t := s.tally(ctx, s.lbAddr, 4*len(instances))
		for _, in := range instances {
			if t.ByInstance[in] == 0 {
				return fmt.Errorf("answers so far: %v", t.ByInstance)
			}
		}
		return nil
	})
}

// tally makes n calls to target and counts who answered.
func (s *stack) tally(ctx context.Context, target string, n int, opts ...grpc.DialOption) Tally {
	t := Tally{Calls: n, ByInstance: map[string]int{}}
	conn, client, err := greeter.Dial(target, opts...)
	if err != nil {
		t.Failed = n
		return t
	}
	defer conn.Close()
	for range n {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		reply, err := greeter.Hello(cctx, client, "demo")
		cancel()
		if err != nil {
			t.Failed++
			continue
		}
		t.ByInstance[reply.GetInstance()]++
	}
	return t
}

func (s *stack) printTally(t Tally) {
	for _, in := range slices.Sorted(maps.Keys(t.ByInstance)) {
		s.say("  %-16s answered %d calls", in, t.ByInstance[in])
	}
	s.say("  calls: %d, failed: %d", t.Calls, t.Failed)
}

func (s *stack) callThroughLB(ctx context.Context) Tally {
	s.say("greeter-client -addr %s: %d calls through nginx", s.lbAddr, s.opts.Calls)
	t := s.tally(ctx, s.lbAddr, s.opts.Calls)
	s.printTally(t)
	return t
}

// callViaResolver skips the load balancer: grpc-go resolves the blue
// instances straight from Consul and balances round robin.
func (s *stack) callViaResolver(ctx context.Context) Tally {
	target := fmt.Sprintf("consul://%s/greeter?tag=blue", s.consulAddr)
	s.say("greeter-client -addr %s: %d calls, no load balancer in the path", target, s.opts.Calls)
	t := s.tally(ctx, target, s.opts.Calls,
		grpc.WithResolvers(consulresolver.NewBuilder(slog.New(slog.DiscardHandler))),
		grpc.WithDefaultServiceConfig(consulresolver.RoundRobin))
	s.printTally(t)
	return t
}

// blueGreen starts two green greeters while calls flow through the load
// balancer, then sends the blues SIGTERM: each drains (maintenance, waits for
// the load balancer to confirm), finishes its calls and deregisters.
func (s *stack) blueGreen(ctx context.Context, blues []*proc) (SwitchReport, error) {
	gen, err := loadgen.New(loadgen.Options{Target: s.lbAddr, Clients: s.opts.SwitchLoad, CallTimeout: 5 * time.Second})
	if err != nil {
		return SwitchReport{}, err
	}
	lctx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	done := make(chan loadgen.Report, 1)
	go func() { r, _ := gen.Run(lctx); done <- r }()
	s.say("blue/green: %d clients calling through the load balancer", s.opts.SwitchLoad)
	if err := awaitCalls(gen, 200); err != nil {
		return SwitchReport{}, err
	}
	before := gen.Snapshot()
	if _, err := s.startGreeters("green", 2); err != nil {
		return SwitchReport{}, err
	}
	if err := waitUntil(30*time.Second, "green to take calls", func() error {
		if byVersion(gen.Snapshot().ByInstance)["green"] == 0 {
			return fmt.Errorf("no green answers yet")
		}
		return nil
	}); err != nil {
		return SwitchReport{}, err
	}
	s.say("blue/green: greens are serving; SIGTERM to both blues")
	termAt := time.Now()
	for _, b := range blues {
		b.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, b := range blues {
		<-b.exited
	}
	converge := time.Since(termAt)
	// Calls started from now on must all reach green. Replies the blues sent
	// just before exiting may still be on their way to the load, so "after" is
	// measured with fresh calls, not by a cut in the load's running counts.
	after := s.tally(ctx, s.lbAddr, 200)
	stopLoad()
	final := <-done
	r := SwitchReport{
		Calls: final.Calls + int64(after.Calls), Failed: final.Failures + int64(after.Failed), Converge: converge,
		Before: byVersion(before.ByInstance),
		During: diff(byVersion(final.ByInstance), byVersion(before.ByInstance)),
		After:  byVersion(toInt64(after.ByInstance)),
	}
	s.say("blue/green: answers before greens came %v, while greens joined and blues drained %v, calls started after blues exited %v",
		r.Before, r.During, r.After)
	s.say("blue/green: calls %d, failed %d, blues drained and exited %s after SIGTERM", r.Calls, r.Failed, r.Converge.Round(time.Millisecond))
	if final.Failures > 0 {
		s.say("blue/green: errors: %v", final.Errors)
	}
	return r, nil
}

func toInt64(m map[string]int) map[string]int64 {
	out := make(map[string]int64, len(m))
	for k, v := range m {
		out[k] = int64(v)
	}
	return out
}

func awaitCalls(gen *loadgen.Gen, n int64) error {
	return waitUntil(30*time.Second, fmt.Sprintf("%d calls", n), func() error {
		if got := gen.Snapshot().Calls; got < n {
			return fmt.Errorf("%d calls so far", got)
		}
		return nil
	})
}

// byVersion sums answers per version; instance names carry it (greeter-blue-1).
func byVersion(byInstance map[string]int64) map[string]int64 {
	out := map[string]int64{}
	for in, n := range byInstance {
		for _, v := range []string{"blue", "green"} {
			if strings.Contains(in, v) {
				out[v] += n
			}
		}
	}
	return out
}

func diff(now, then map[string]int64) map[string]int64 {
	out := map[string]int64{}
	for k, v := range now {
		if d := v - then[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}
