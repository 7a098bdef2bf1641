// Command greeter-client calls the demo greeter through a load balancer (or
// any grpc-go target) and prints which instance answered each call.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"google.golang.org/grpc"

	"github.com/lbctl/lbctl/consulresolver"
	"github.com/lbctl/lbctl/greeter"
)

func main() {
	target := flag.String("addr", "127.0.0.1:5000", "where to call: host:port of the load balancer, or consul://AGENT/SERVICE?tag=TAG to skip it")
	n := flag.Int("n", 10, "number of calls")
	name := flag.String("name", "lbctl", "name to greet")
	flag.Parse()

	conn, client, err := greeter.Dial(*target,
		grpc.WithResolvers(consulresolver.NewBuilder(slog.New(slog.NewTextHandler(os.Stderr, nil)))),
		grpc.WithDefaultServiceConfig(consulresolver.RoundRobin))
	if err != nil {
		fmt.Fprintln(os.Stderr, "greeter-client:", err)
		os.Exit(1)
	}
	defer conn.Close()
	failed := 0
	for i := 0; i < *n; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		reply, err := greeter.Hello(ctx, client, *name)
		cancel()
		if err != nil {
			failed++
			fmt.Printf("call %d: error: %v\n", i+1, err)
			continue
		}
		fmt.Printf("call %d: %s (instance %s, version %s)\n", i+1, reply.GetMessage(), reply.GetInstance(), reply.GetVersion())
	}
	if failed > 0 {
		os.Exit(1)
	}
}
