package catalog

import (
	"testing"
	"testing/synctest"
)

// noEmptySnapshot fails the test if out holds a snapshot in which a query
// has no instance (the fake's services all have one).
func noEmptySnapshot(t *testing.T, out chan Snapshot, when string) {
	t.Helper()
	select {
	case s := <-out:
		for q, in := range s.Instances {
			if len(in) == 0 {
				t.Fatalf("%s: snapshot with no instance of %s (index %d): an answer from the server's past was taken", when, q, s.Indexes[q])
			}
		}
	default:
	}
}

// Consul stops just after Run starts from a Once's answers, then comes back
// answering from its past (a server just elected leader, still applying its
// raft log: an empty catalog at index 1). Run goes on asking from the
// answers it holds, so the past is never taken for news: this was
// TestConsulOutageLosesNoCallAndConverges's flake, where lbctl rendered an
// empty upstream and nginx answered "no healthy instances".
func TestRunDirectTakesNoAnswerFromBeforeWhatItHolds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f, w := onceDirect(t, 3)
		f.set(func() { f.down = true })
		out, _ := runFake(t, w)
		<-out // the kept answers
		f.waitFor(t, "every query's request to fail", func() bool { return f.failed >= 3 })

		f.set(func() { f.down, f.past = false, true })
		f.waitFor(t, "every query asked while the server answers from its past", func() bool { return len(f.askedPast) == 3 })
		synctest.Wait()
		noEmptySnapshot(t, out, "while the server answered from its past")

		f.set(func() { f.past = false })
		f.change("s001", 4242)
		s := <-out
		if in := s.Instances[Query{Service: "s001"}]; len(in) != 1 || in[0].Port != 4242 || s.Indexes[Query{Service: "s001"}] != 1011 {
			t.Fatalf("s001 = %+v at %d, want port 4242 at 1011", in, s.Indexes[Query{Service: "s001"}])
		}
		for q, in := range s.Instances {
			if len(in) != 1 {
				t.Fatalf("%s has %d instances after the server caught up, want 1", q, len(in))
			}
		}
	})
}

// With the change feeds, fetches are not blocking queries: a server that
// answers from its past is asked again with a consistent read, which fails
// until its log is applied, and the answers held stay meanwhile. A lower
// index that a consistent read confirms (a cluster restored from an older
// snapshot) is taken.
func TestRunFeedsConfirmAnIndexThatWentBackwards(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(3)
		w := fakeWatcher(f, 3)
		out, _ := runFake(t, w)
		<-out

		f.set(func() { f.past = true })
		f.sweeps <- struct{}{} // the services feed moves: every query is probed, then fetched
		f.waitFor(t, "every query fetched from the past", func() bool { return len(f.askedPast) == 3 })
		synctest.Wait()
		noEmptySnapshot(t, out, "while the server answered from its past")

		f.set(func() { f.past = false })
		f.waitFor(t, "a consistent read of every query", func() bool { return len(f.consistent) == 3 })
		synctest.Wait()
		noEmptySnapshot(t, out, "once the server caught up")

		f.set(func() {
			f.data["s002"] = []Instance{{ID: "s002-restored", Node: "n1", Address: "10.0.0.2", Port: 2002}}
			f.index["s002"] = 5 // a cluster restored from an older snapshot
		})
		f.sweeps <- struct{}{}
		s := <-out
		if in := s.Instances[Query{Service: "s002"}]; len(in) != 1 || in[0].ID != "s002-restored" || s.Indexes[Query{Service: "s002"}] != 5 {
			t.Fatalf("s002 = %+v at %d, want the restored instance at 5", in, s.Indexes[Query{Service: "s002"}])
		}
		if f.consistent["s002"] != 2 {
			t.Errorf("%d consistent reads of s002, want 2 (after the past, after the reset)", f.consistent["s002"])
		}
	})
}
