// Command lbctl-loadgen drives gRPC greeter load through a load balancer on
// loopback and prints what answered: calls per instance, failures by code,
// streams opened and broken.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"slices"
	"time"

	"github.com/lbctl/lbctl/loadgen"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "lbctl-loadgen:", err)
		os.Exit(1)
	}
}

func run(args []string, out io.Writer) error {
	var o loadgen.Options
	fs := flag.NewFlagSet("lbctl-loadgen", flag.ContinueOnError)
	fs.StringVar(&o.Target, "target", "127.0.0.1:5000", "load balancer address (loopback only)")
	fs.IntVar(&o.Clients, "clients", 32, "unary callers, each on its own connection")
	fs.IntVar(&o.Streams, "streams", 8, "long-lived StreamHellos streams, each on its own connection")
	fs.Int64Var(&o.Calls, "calls", 0, "stop after this many unary calls (0: no bound)")
	fs.DurationVar(&o.Duration, "duration", 10*time.Second, "stop after this long (0: until Ctrl-C or -calls)")
	fs.DurationVar(&o.CallTimeout, "call-timeout", 5*time.Second, "timeout of each unary call")
	fs.DurationVar(&o.StreamInterval, "stream-interval", 20*time.Millisecond, "server's interval between stream messages")
	delay := fs.Uint("delay-ms", 0, "server holds each unary call this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	o.DelayMs = uint32(*delay)
	g, err := loadgen.New(o)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	rep, err := g.Run(ctx)
	if err != nil {
		return err
	}
	printReport(out, rep)
	if rep.Failures > 0 || rep.StreamsBroken > 0 {
		return fmt.Errorf("%d failed calls, %d broken streams", rep.Failures, rep.StreamsBroken)
	}
	return nil
}

func printReport(w io.Writer, r loadgen.Report) {
	fmt.Fprintf(w, "calls %d  failures %d  in %s (%.0f calls/s)\n", r.Calls, r.Failures, r.Elapsed.Round(time.Millisecond),
		float64(r.Calls)/r.Elapsed.Seconds())
	for _, inst := range slices.Sorted(maps.Keys(r.ByInstance)) {
		fmt.Fprintf(w, "  answered by %-16s %d\n", inst, r.ByInstance[inst])
	}
	fmt.Fprintf(w, "streams %d  broken %d  messages %d\n", r.Streams, r.StreamsBroken, r.StreamMessages)
	for _, e := range slices.Sorted(maps.Keys(r.Errors)) {
		fmt.Fprintf(w, "  error %dx: %s\n", r.Errors[e], e)
	}
}
