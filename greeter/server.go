// Package greeter is the demo gRPC service that lbctl puts behind nginx: each
// reply names the instance and version that answered it.
package greeter

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/lbctl/lbctl/greeter/greeterpb"
)

// Server answers Greeter calls as one named instance.
type Server struct {
	greeterpb.UnimplementedGreeterServer
	Instance string
	Version  string
	// OnCall, if set, is called as each unary call starts (tests record
	// when calls reached the instance). It must be safe for concurrent use.
	OnCall func()

	served atomic.Int64
}

// Served is how many unary calls this server has answered.
func (s *Server) Served() int64 { return s.served.Load() }

// SayHello answers after the requested delay (or when the call is cancelled).
func (s *Server) SayHello(ctx context.Context, req *greeterpb.HelloRequest) (*greeterpb.HelloReply, error) {
	if s.OnCall != nil {
		s.OnCall()
	}
	if req.GetDelayMs() > 0 {
		select {
		case <-time.After(time.Duration(req.GetDelayMs()) * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	s.served.Add(1)
	return s.reply(req.GetName()), nil
}

// StreamHellos sends one reply per interval until the count is reached or the client goes away.
func (s *Server) StreamHellos(req *greeterpb.StreamRequest, stream greeterpb.Greeter_StreamHellosServer) error {
	interval := time.Duration(max(req.GetIntervalMs(), 1)) * time.Millisecond
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for sent := uint32(0); req.GetCount() == 0 || sent < req.GetCount(); sent++ {
		if err := stream.Send(s.reply(req.GetName())); err != nil {
			return err
		}
		select {
		case <-ticker.C:
		case <-stream.Context().Done():
			return nil
		}
	}
	return nil
}

func (s *Server) reply(name string) *greeterpb.HelloReply {
	return &greeterpb.HelloReply{
		Message:  fmt.Sprintf("Hello %s from %s", name, s.Instance),
		Instance: s.Instance,
		Version:  s.Version,
	}
}

// Serve runs the greeter and the standard gRPC health service on lis until ctx
// ends, then reports NOT_SERVING and stops gracefully: in-flight calls finish,
// new ones are refused.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	srv := grpc.NewServer()
	greeterpb.RegisterGreeterServer(srv, s)
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(greeterpb.Greeter_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, hs)

	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		<-ctx.Done()
		hs.Shutdown()
		srv.GracefulStop()
	}()
	err := srv.Serve(lis)
	if ctx.Err() != nil {
		<-stopped
		return nil
	}
	return err
}
