package reload

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/lbctl/lbctl/config"
	"github.com/lbctl/lbctl/render"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func ms(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }

func numbered(i int) render.Update {
	return render.Update{Index: uint64(i), Seen: ms(i), Changes: []string{fmt.Sprint("change ", i)}}
}

func TestCoalescerWaitsForQuiet(t *testing.T) {
	c := &coalescer{min: 20 * time.Millisecond, max: 80 * time.Millisecond}
	if _, ok := c.due(); ok {
		t.Fatal("due with nothing pending")
	}
	c.add(numbered(0), ms(0))
	c.add(numbered(5), ms(5))
	if at, _ := c.due(); !at.Equal(ms(25)) {
		t.Fatalf("due at %v, want 25ms: 20ms after the last change", at.Sub(t0))
	}
	u := c.take()
	if u.Index != 5 || !u.Seen.Equal(ms(0)) || !slices.Equal(u.Changes, []string{"change 0", "change 5"}) {
		t.Fatalf("took %+v, want index 5, first seen 0ms, both changes", u)
	}
	if _, ok := c.due(); ok {
		t.Fatal("still due after take")
	}
}

func TestCoalescerCapsTheWaitAtMax(t *testing.T) {
	c := &coalescer{min: 20 * time.Millisecond, max: 80 * time.Millisecond}
	for i := 0; i <= 100; i += 2 { // a change every 2ms: never 20ms of quiet
		c.add(numbered(i), ms(i))
		if at, _ := c.due(); at.After(ms(80)) {
			t.Fatalf("after change at %dms due at %v, want no later than 80ms", i, at.Sub(t0))
		}
	}
}

// A burst of 50 changes over 100ms, taken whenever due, gives 2 applies
// with the default wait (min 20ms, max 80ms).
func TestBurstOf50With20And80msWaitGives2Applies(t *testing.T) {
	c := &coalescer{min: 20 * time.Millisecond, max: 80 * time.Millisecond}
	applies := 0
	for now := 0; now <= 300; now++ {
		if now < 100 && now%2 == 0 {
			c.add(numbered(now), ms(now))
		}
		if at, ok := c.due(); ok && !at.After(ms(now)) {
			c.take()
			applies++
		}
	}
	if applies != 2 {
		t.Fatalf("%d applies, want 2", applies)
	}
}

func TestBurstWithDefaultWaitGivesOneApply(t *testing.T) {
	var cfg config.Config
	cfg.SetDefaults()
	c := &coalescer{min: cfg.Wait.Min, max: cfg.Wait.Max}
	applies := 0
	for now := 0; now <= 500; now++ {
		if now < 100 && now%2 == 0 {
			c.add(numbered(now), ms(now))
		}
		if at, ok := c.due(); ok && !at.After(ms(now)) {
			c.take()
			applies++
		}
	}
	if applies != 1 {
		t.Fatalf("%d applies, want 1", applies)
	}
}

func TestCoalescerKeepsTheGapBetweenReloads(t *testing.T) {
	c := &coalescer{min: 10 * time.Millisecond, max: 50 * time.Millisecond, gap: 500 * time.Millisecond}
	c.add(numbered(0), ms(0))
	if at, _ := c.due(); !at.Equal(ms(10)) {
		t.Fatalf("first update due at %v, want 10ms: no reload yet to keep a gap from", at.Sub(t0))
	}
	c.take()
	c.reloadedAt(ms(30))
	c.add(numbered(100), ms(100))
	if at, _ := c.due(); !at.Equal(ms(530)) {
		t.Fatalf("update after a reload due at %v, want 530ms: 500ms after the reload at 30ms", at.Sub(t0))
	}
	c.take()
	c.add(numbered(600), ms(600))
	if at, _ := c.due(); !at.Equal(ms(610)) {
		t.Fatalf("update long after the last reload due at %v, want 610ms: only min applies", at.Sub(t0))
	}
}
