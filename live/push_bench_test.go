package live

import (
	"context"
	"path/filepath"
	"testing"
)

// BenchmarkPush is one push of one upstream of two peers to a real nginx,
// read back: the live path's share of an instance change.
func BenchmarkPush(b *testing.B) {
	r := startRig(b, rigOptions{workers: 2}, "svc")
	sets := [2]Set{
		{"svc": NewUpstream([]Peer{{Host: "127.0.0.1", Port: 1001, Weight: 1}, {Host: "127.0.0.1", Port: 1002, Weight: 1}})},
		{"svc": NewUpstream([]Peer{{Host: "127.0.0.1", Port: 1003, Weight: 1}})},
	}
	for i := 0; b.Loop(); i++ {
		if _, err := r.client.Push(context.Background(), sets[i%2], true); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWriteSeed is one write of the seed file, which Apply does after
// the push.
func BenchmarkWriteSeed(b *testing.B) {
	path := filepath.Join(b.TempDir(), "live.json")
	set := Set{"svc": NewUpstream([]Peer{{Host: "127.0.0.1", Port: 1001, Weight: 1}})}
	for b.Loop() {
		if err := WriteSeed(path, set); err != nil {
			b.Fatal(err)
		}
	}
}
