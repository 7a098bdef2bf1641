// Command greeter-server is the demo gRPC service: it answers SayHello with
// its instance name and version, serves the gRPC health service for Consul's
// grpc check, and on SIGTERM stops gracefully (in-flight calls finish, new
// ones are refused).
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/lbctl/lbctl/greeter"
)

func main() {
	listen := flag.String("listen", envOr("GREETER_LISTEN", "127.0.0.1:7000"), "address to serve on")
	instance := flag.String("instance", envOr("GREETER_INSTANCE", hostname()), "name this instance answers with")
	version := flag.String("version", envOr("GREETER_VERSION", "v1"), "version label in every reply")
	flag.Parse()

	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("greeter-server: %v", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Printf("greeter-server %s (%s) serving on %s\n", *instance, *version, lis.Addr())
	s := &greeter.Server{Instance: *instance, Version: *version}
	if err := s.Serve(ctx, lis); err != nil {
		log.Fatalf("greeter-server: %v", err)
	}
	fmt.Printf("greeter-server %s stopped after %d calls\n", *instance, s.Served())
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func hostname() string {
	h, err := os.Hostname()
	if err != nil {
		return "greeter"
	}
	return h
}
