// Package faultygreeter is a greeter backend for tests that fails a chosen
// share of its calls: every Nth SayHello answers with a gRPC error instead of
// a reply. It stands in for "a new version that misbehaves".
package faultygreeter

import (
	"context"
	"net"
	"sync/atomic"
	"testing"

	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/lbctl/lbctl/greeter"
	"github.com/lbctl/lbctl/greeter/greeterpb"
)

// Server answers like greeter.Server but fails every FailEvery-th call
// (0: never) with Code. Change FailEvery while it serves with SetFailEvery.
type Server struct {
	*greeter.Server
	Addr string
	Port int

	code      codes.Code
	failEvery atomic.Int64
	calls     atomic.Int64
	failed    atomic.Int64
}

// Start serves a faulty greeter on a free loopback port until the test ends.
func Start(t testing.TB, instance, version string, failEvery int, code codes.Code) *Server {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("faulty greeter listen: %v", err)
	}
	s := &Server{
		Server: &greeter.Server{Instance: instance, Version: version},
		Addr:   lis.Addr().String(), Port: lis.Addr().(*net.TCPAddr).Port, code: code,
	}
	s.failEvery.Store(int64(failEvery))
	srv := grpc.NewServer()
	greeterpb.RegisterGreeterServer(srv, s)
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(lis) }()
	t.Cleanup(func() { srv.Stop(); <-done })
	return s
}

// SetFailEvery changes the failure rate: every n-th call fails (0: none).
func (s *Server) SetFailEvery(n int) { s.failEvery.Store(int64(n)) }

// Failed is how many calls this server failed on purpose.
func (s *Server) Failed() int64 { return s.failed.Load() }

// SayHello fails every FailEvery-th call, and otherwise answers as greeter.Server.
func (s *Server) SayHello(ctx context.Context, req *greeterpb.HelloRequest) (*greeterpb.HelloReply, error) {
	n := s.calls.Add(1)
	if every := s.failEvery.Load(); every > 0 && n%every == 0 {
		s.failed.Add(1)
		return nil, status.Errorf(s.code, "%s fails on purpose", s.Instance)
	}
	return s.Server.SayHello(ctx, req)
}

// Registration registers this backend as service name with tags, meta version.
func (s *Server) Registration(name string, tags ...string) *api.AgentServiceRegistration {
	return &api.AgentServiceRegistration{
		ID: name + "-" + s.Instance, Name: name, Address: "127.0.0.1", Port: s.Port, Tags: tags,
		Meta: map[string]string{"version": s.Version},
	}
}
