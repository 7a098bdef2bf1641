package greeter

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/lbctl/lbctl/greeter/greeterpb"
)

// Dial opens a plaintext gRPC client connection to target (host:port, or any
// grpc-go target such as consul://...).
func Dial(target string, opts ...grpc.DialOption) (*grpc.ClientConn, greeterpb.GreeterClient, error) {
	opts = append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)
	conn, err := grpc.NewClient(target, opts...)
	if err != nil {
		return nil, nil, err
	}
	return conn, greeterpb.NewGreeterClient(conn), nil
}

// Hello makes one SayHello call and returns the reply.
func Hello(ctx context.Context, c greeterpb.GreeterClient, name string) (*greeterpb.HelloReply, error) {
	return c.SayHello(ctx, &greeterpb.HelloRequest{Name: name})
}
