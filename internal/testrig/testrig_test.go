package testrig

import (
	"context"
	"fmt"
	"strings"
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

// The test nginx takes a listener per service for 2,000 services (the scale
// bench's largest size): with 1024 worker_connections, nginx -t refused it
// ("1024 worker_connections are not enough for 2000 listening sockets").
func TestNginxTakesTwoThousandListeners(t *testing.T) {
	n := NewNginx(t)
	var conf strings.Builder
	for i := range 2000 {
		fmt.Fprintf(&conf, "server { listen 127.0.0.1:%d http2; return 444; }\n", 30000+i)
	}
	if err := n.TestWith("many.conf", conf.String()); err != nil {
		t.Fatal(err)
	}
}

// A Fatal through ProgramTB (a command using testrig outside go test) comes
// back from Catch as an error with its message, and the cleanups run.
func TestProgramTBFatalIsAnError(t *testing.T) {
	tb, err := NewProgramTB()
	if err != nil {
		t.Fatal(err)
	}
	cleaned := false
	tb.Cleanup(func() { cleaned = true })
	err = func() (err error) {
		defer tb.Close()
		defer Catch(&err)
		tb.Fatalf("first render: %s", "rejected")
		return nil
	}()
	if err == nil || err.Error() != "first render: rejected" || !cleaned {
		t.Fatalf("err = %v, cleaned %v; want the Fatal's message and the cleanups run", err, cleaned)
	}
}

// testrig's cleanups ask Failed (StartConsul shows its log when a test
// failed): ProgramTB answers it, true once Errorf was called.
func TestProgramTBFailedAfterErrorf(t *testing.T) {
	tb, err := NewProgramTB()
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	if tb.Failed() {
		t.Fatal("failed before any error")
	}
	tb.Errorf("a round: %s", "timed out")
	if !tb.Failed() {
		t.Fatal("not failed after Errorf")
	}
}
