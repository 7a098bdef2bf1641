package main

import (
	"testing"
	"time"
)

// An applied update counts for a change once its answer for the service is
// at the write's index: an earlier one, for the service's previous change,
// does not.
func TestMatchAppliedWantsTheWritesIndex(t *testing.T) {
	at := time.Unix(100, 0)
	applied := []message{
		{Event: "applied", At: at.Add(1 * time.Millisecond).UnixNano(), Seen: at.UnixNano(), Changed: map[string]uint64{"svc-0000": 9}},
		{Event: "applied", At: at.Add(3 * time.Millisecond).UnixNano(), Seen: at.Add(2 * time.Millisecond).UnixNano(), Changed: map[string]uint64{"svc-0000": 10, "svc-0001": 10}},
	}
	chg := []change{{svc: "svc-0000", index: 10, before: at, written: at.Add(time.Millisecond)}, {svc: "svc-0002", index: 11}}
	outs := matchApplied(chg, applied)
	if outs[0].applied.UnixNano() != applied[1].At || outs[1].seen() {
		t.Fatalf("outcomes %+v", outs)
	}
	f := figuresOf(chg, outs, appliedAt)
	if !f.ok || f.fromWritten[0] != 2*time.Millisecond || f.fromBefore[1] != 3*time.Millisecond {
		t.Fatalf("figures %+v: want 2 ms from the write returned, 3 ms from before it", f)
	}
}
