// Command lbctl-demo runs lbctl's local demo stack on loopback (see package
// demo). scripts/demo.sh builds everything and runs it. With -runs N it runs
// the whole stack N times, quietly, and prints one line per run of the
// blue/green switch's figures and a summary.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"

	"github.com/lbctl/lbctl/demo"
)

func main() {
	var o demo.Options
	flag.StringVar(&o.LBCTL, "lbctl", "lbctl", "lbctl binary")
	flag.StringVar(&o.Greeter, "greeter", "greeter-server", "greeter-server binary")
	flag.StringVar(&o.Consul, "consul", "consul", "consul binary")
	flag.StringVar(&o.Nginx, "nginx", "nginx", "nginx binary")
	flag.StringVar(&o.Dir, "dir", "", "work directory for configs and logs (default: a new temp dir)")
	flag.IntVar(&o.Calls, "calls", 20, "calls per path (through the load balancer, and via Consul) before the switch")
	flag.IntVar(&o.SwitchLoad, "clients", 8, "concurrent clients calling through the load balancer during the blue/green switch")
	runs := flag.Int("runs", 1, "run the whole demo this many times and print a summary")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	o.Out = os.Stdout
	if *runs > 1 {
		o.Out = io.Discard
	}
	failed := false
	var converge []time.Duration
	var calls, failures int64
	for i := 1; i <= *runs && ctx.Err() == nil; i++ {
		r, err := runOnce(ctx, o)
		if err != nil {
			fmt.Fprintln(os.Stderr, "lbctl-demo:", err)
			os.Exit(1)
		}
		bad := r.ThroughLB.Failed+r.ViaResolver.Failed > 0 || r.Switch.Failed > 0
		failed = failed || bad
		calls, failures = calls+r.Switch.Calls, failures+r.Switch.Failed
		converge = append(converge, r.Switch.Converge)
		if *runs > 1 {
			fmt.Printf("run %2d: blue/green calls %5d, failed %d, blues drained and exited in %s\n",
				i, r.Switch.Calls, r.Switch.Failed, r.Switch.Converge.Round(time.Millisecond))
		}
	}
	if *runs > 1 {
		slices.Sort(converge)
		fmt.Printf("%d runs: %d calls during blue/green switches, %d failed; drain-to-exit min %s, median %s, max %s\n",
			len(converge), calls, failures, converge[0].Round(time.Millisecond),
			converge[len(converge)/2].Round(time.Millisecond), converge[len(converge)-1].Round(time.Millisecond))
	}
	if failed {
		os.Exit(1)
	}
}

// runOnce runs the demo in its own work directory.
func runOnce(ctx context.Context, o demo.Options) (demo.Report, error) {
	if o.Dir == "" {
		d, err := os.MkdirTemp("", "lbctl-demo-")
		if err != nil {
			return demo.Report{}, err
		}
		o.Dir = d
	} else if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return demo.Report{}, err
	}
	r, err := demo.Run(ctx, o)
	if err != nil {
		return r, fmt.Errorf("%w (logs in %s)", err, o.Dir)
	}
	fmt.Fprintf(o.Out, "demo: done; logs and configs in %s\n", o.Dir)
	if o.Out == io.Discard {
		os.RemoveAll(o.Dir)
	}
	return r, nil
}
