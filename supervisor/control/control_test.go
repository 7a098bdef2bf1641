package control

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/lbctl/lbctl/config"
	"github.com/lbctl/lbctl/supervisor"
)

func startServer(t *testing.T) (*Client, string, *supervisor.Supervisor) {
	t.Helper()
	startSecs, retries, stopWait := 0.0, 0, 5.0
	p, err := supervisor.FromConfig(config.Program{
		Name: "app", Command: []string{"sleep", "100"},
		StartSecs: &startSecs, StartRetries: &retries, StopWaitSecs: &stopWait,
	})
	if err != nil {
		t.Fatal(err)
	}
	sup, err := supervisor.New([]supervisor.Program{p}, supervisor.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	supDone := make(chan error, 1)
	go func() { supDone <- sup.Run(ctx) }()

	path := filepath.Join(t.TempDir(), "lbctl.sock")
	sock, err := Listen(path, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	srvDone := make(chan error, 1)
	go func() { srvDone <- sock.Serve(ctx, Handler(sup, slog.New(slog.DiscardHandler))) }()
	t.Cleanup(func() {
		cancel()
		<-srvDone
		<-supDone
	})
	return NewClient(path), path, sup
}

func TestSocketIsPrivateAndExclusive(t *testing.T) {
	_, path, _ := startServer(t)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Errorf("socket mode = %v, want 0600 socket", fi.Mode())
	}
	if _, err := Listen(path, 0o600); err == nil {
		t.Error("a second Listen on a live socket succeeded")
	}
}

func TestStaleSocketIsReplaced(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lbctl.sock")
	first, err := Listen(path, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	first.lis.Close() // a crashed lbctl leaves the file behind
	second, err := Listen(path, 0o600)
	if err != nil {
		t.Fatalf("stale socket: %v", err)
	}
	second.lis.Close()
}

func TestStatusAndActions(t *testing.T) {
	client, _, sup := startServer(t)
	ctx := context.Background()
	if err := client.Act(ctx, "stop", "app"); err != nil {
		t.Fatal(err)
	}
	reply, err := client.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(reply.Programs) != 1 || reply.Programs[0].State != supervisor.Stopped || reply.Programs[0].LastExit == nil {
		t.Fatalf("status after stop = %+v", reply.Programs)
	}
	if err := client.Act(ctx, "start", "app"); err != nil {
		t.Fatal(err)
	}
	if st, _ := sup.StatusOf("app"); st.State != supervisor.Running {
		t.Errorf("after start: %v", st.State)
	}
	pid := sup.PID("app")
	if err := client.Act(ctx, "restart", "app"); err != nil {
		t.Fatal(err)
	}
	if got := sup.PID("app"); got == pid || got == 0 {
		t.Errorf("restart: pid %d -> %d", pid, got)
	}
	if err := client.Signal(ctx, "app", "CONT"); err != nil {
		t.Fatal(err)
	}
	var ce *Error
	if err := client.Act(ctx, "start", "app"); !errors.As(err, &ce) || ce.Code != http.StatusConflict {
		t.Errorf("start of a running program = %v, want 409", err)
	}
	if err := client.Act(ctx, "stop", "ghost"); !errors.As(err, &ce) || ce.Code != http.StatusNotFound {
		t.Errorf("stop ghost = %v, want 404", err)
	}
	if err := client.Signal(ctx, "app", "BOGUS"); !errors.As(err, &ce) || ce.Code != http.StatusBadRequest {
		t.Errorf("bad signal = %v, want 400", err)
	}
	if err := client.Act(ctx, "explode", "app"); !errors.As(err, &ce) || ce.Code != http.StatusNotFound {
		t.Errorf("unknown action = %v, want 404", err)
	}
}
