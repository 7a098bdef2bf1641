package live

import (
	"context"
	"testing"

	"github.com/lbctl/lbctl/internal/testrig"
)

// Push, read back, and the very next call in every worker uses the new set.
func TestPushThenEveryWorkerServesTheNewSetAtOnce(t *testing.T) {
	alpha := testrig.StartGreeter(t, "alpha", "v1")
	beta := testrig.StartGreeter(t, "beta", "v1")
	r := startRig(t, rigOptions{workers: 2}, "grpc_x")

	first := Set{"grpc_x": NewUpstream([]Peer{peerOf(alpha, 1)})}
	r.push(first, false)
	got, err := r.client.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got["grpc_x"].Version != first["grpc_x"].Version || len(got["grpc_x"].Peers) != 1 || got["grpc_x"].Peers[0] != first["grpc_x"].Peers[0] {
		t.Fatalf("read back %+v, want %+v", got, first)
	}
	// Both workers have decoded alpha and cached it.
	r.untilEveryWorker("grpc_x", "alpha", 2)

	r.push(Set{"grpc_x": NewUpstream([]Peer{peerOf(beta, 1)})}, false)
	calls := r.untilEveryWorker("grpc_x", "beta", 2)
	t.Logf("%d calls after the push, on fresh connections over 2 workers, all answered by beta", calls)
}
