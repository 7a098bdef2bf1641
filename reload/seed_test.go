package reload

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/lbctl/lbctl/internal/testrig"
	"github.com/lbctl/lbctl/live"
)

func portSet(port int) live.Set {
	return live.Set{"grpc_greeter": live.NewUpstream([]live.Peer{{Host: "127.0.0.1", Port: port, Weight: 1}})}
}

// The seed file comes to hold the newest set handed to Later, and a set
// written Now is never replaced by an older one still pending.
func TestSeedWriterKeepsTheNewestSet(t *testing.T) {
	path := filepath.Join(t.TempDir(), "live.json")
	s := newSeedWriter(path, slog.New(slog.NewTextHandler(io.Discard, nil)))
	holds := func(port int) error {
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if got, want := seedVersion(t, string(b)), portSet(port)["grpc_greeter"].Version; got != want {
			return fmt.Errorf("seed holds %q, want port %d's %q", got, port, want)
		}
		return nil
	}
	for port := 7000; port < 7100; port++ {
		s.Later(portSet(port))
	}
	testrig.WaitFor(t, 10*time.Second, "the newest set in the seed", func() error { return holds(7099) })

	for port := 8000; port < 8100; port++ {
		s.Later(portSet(port))
	}
	if err := s.Now(portSet(9000)); err != nil {
		t.Fatal(err)
	}
	testrig.WaitFor(t, 10*time.Second, "the background writer to stop", func() error {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.running {
			return fmt.Errorf("still running")
		}
		return nil
	})
	if err := holds(9000); err != nil {
		t.Fatalf("after Now and the pending sets: %v", err)
	}
}
