package live

import (
	"context"
	"fmt"
	"testing"
)

// BenchmarkPushOneOf1000 is an instance change at scale: one upstream
// pushed, without prune, to an nginx holding 1,000 of 10 peers each.
func BenchmarkPushOneOf1000(b *testing.B) {
	r := startRig(b, rigOptions{workers: 2, dictSize: "32m"}, "svc")
	set := Set{}
	for i := range 1000 {
		var peers []Peer
		for j := range 10 {
			peers = append(peers, Peer{Host: fmt.Sprintf("10.0.%d.%d", i%250, j), Port: 8000 + j, Weight: 1})
		}
		set[fmt.Sprintf("grpc_svc_%04d", i)] = NewUpstream(peers)
	}
	if _, err := r.client.Push(context.Background(), set, true); err != nil {
		b.Fatal(err)
	}
	one := [2]Set{{"grpc_svc_0001": NewUpstream([]Peer{{Host: "127.0.0.1", Port: 1, Weight: 1}})}, {"grpc_svc_0001": NewUpstream([]Peer{{Host: "127.0.0.1", Port: 2, Weight: 1}})}}
	for i := 0; b.Loop(); i++ {
		if _, err := r.client.Push(context.Background(), one[i%2], false); err != nil {
			b.Fatal(err)
		}
	}
}
