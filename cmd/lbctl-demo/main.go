// Command lbctl-demo runs lbctl's local demo stack on loopback (see package
// demo). scripts/demo.sh builds everything and runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/lbctl/lbctl/demo"
)

func main() {
	var o demo.Options
	flag.StringVar(&o.LBCTL, "lbctl", "lbctl", "lbctl binary")
	flag.StringVar(&o.Greeter, "greeter", "greeter-server", "greeter-server binary")
	flag.StringVar(&o.Consul, "consul", "consul", "consul binary")
	flag.StringVar(&o.Nginx, "nginx", "nginx", "nginx binary")
	flag.StringVar(&o.Dir, "dir", "", "work directory for configs and logs (default: a new temp dir)")
	flag.IntVar(&o.Calls, "calls", 20, "calls to make through the load balancer")
	flag.Parse()
	o.Out = os.Stdout
	if o.Dir == "" {
		d, err := os.MkdirTemp("", "lbctl-demo-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "lbctl-demo:", err)
			os.Exit(1)
		}
		o.Dir = d
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	r, err := demo.Run(ctx, o)
	if err != nil {
		fmt.Fprintf(os.Stderr, "lbctl-demo: %v (logs in %s)\n", err, o.Dir)
		os.Exit(1)
	}
	fmt.Printf("demo: done; logs and configs in %s\n", o.Dir)
	if r.Failed > 0 {
		os.Exit(1)
	}
}
