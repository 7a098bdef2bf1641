package testrig

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestNginxProxiesGRPCToGreeter(t *testing.T) {
	g := StartGreeter(t, "alpha", "v1")
	n := NewNginx(t)
	port := FreePort(t)
	n.WriteConf("greeter.conf", fmt.Sprintf(`
upstream greeter { server %s; }
server { listen 127.0.0.1:%d http2; location / { grpc_pass grpc://greeter; } }
`, g.Addr, port))
	if err := n.Test(); err != nil {
		t.Fatal(err)
	}
	n.Start()
	ExpectInstance(t, LoopbackAddr(port), "alpha", 10*time.Second)
}

func TestZeroInstanceBlockAnswersUnavailable(t *testing.T) {
	n := NewNginx(t)
	port := FreePort(t)
	n.WriteConf("none.conf", fmt.Sprintf(`
server { listen 127.0.0.1:%d http2;
  location / {
    default_type application/grpc;
    add_header grpc-status 14 always;
    add_header grpc-message "no healthy instances" always;
    return 200 "";
  }
}
`, port))
	n.Start()
	_, err := CallInstance(context.Background(), LoopbackAddr(port))
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("got %v, want Unavailable", err)
	}
	t.Log(err)
}
