package freeport

import "testing"

func TestGetNeverHandsOutAPortTwice(t *testing.T) {
	seen := map[int]bool{}
	for range 500 {
		p, err := Get()
		if err != nil {
			t.Fatal(err)
		}
		if p < 20000 || p > 31999 {
			t.Fatalf("port %d outside 20000-31999", p)
		}
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
	}
}
