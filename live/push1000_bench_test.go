package live

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
)

// thousandUpstreams is 1,000 upstreams of 10 peers each.
func thousandUpstreams() Set {
	set := Set{}
	for i := range 1000 {
		var peers []Peer
		for j := range 10 {
			peers = append(peers, Peer{Host: fmt.Sprintf("10.0.%d.%d", i%250, j), Port: 8000 + j, Weight: 1})
		}
		set[fmt.Sprintf("grpc_svc_%04d", i)] = NewUpstream(peers)
	}
	return set
}

// oneChanged is two versions of upstream grpc_svc_0001, to alternate.
var oneChanged = [2]Upstream{NewUpstream([]Peer{{Host: "127.0.0.1", Port: 1, Weight: 1}}), NewUpstream([]Peer{{Host: "127.0.0.1", Port: 2, Weight: 1}})}

// BenchmarkPushOneOf1000 is an instance change at scale: one upstream
// pushed, without prune, to an nginx holding 1,000 of 10 peers each.
func BenchmarkPushOneOf1000(b *testing.B) {
	r := startRig(b, rigOptions{workers: 2, dictSize: "32m"}, "svc")
	if _, err := r.client.Push(context.Background(), thousandUpstreams(), true); err != nil {
		b.Fatal(err)
	}
	for i := 0; b.Loop(); i++ {
		if _, err := r.client.Push(context.Background(), Set{"grpc_svc_0001": oneChanged[i%2]}, false); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSeedOneChangeOf1000 is the seed file written after an instance
// change at scale: 1,000 upstreams, one of them changed.
func BenchmarkSeedOneChangeOf1000(b *testing.B) {
	for _, tc := range []struct {
		name string
		seed func(path string) *Seed
	}{
		{"kept", NewSeed}, // one Seed: the unchanged upstreams' JSON kept
		{"encoded", func(string) *Seed { return nil }}, // every upstream encoded, as before
	} {
		b.Run(tc.name, func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "live.json")
			set, seed := thousandUpstreams(), tc.seed(path)
			for i := 0; b.Loop(); i++ {
				set["grpc_svc_0001"] = oneChanged[i%2]
				s := seed
				if s == nil {
					s = NewSeed(path)
				}
				if err := s.Write(set); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
