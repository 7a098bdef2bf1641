package backoff

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

func TestBackoffGrowsToCapWithJitterAndResets(t *testing.T) {
	b := &Backoff{Min: 100 * time.Millisecond, Max: time.Second, Rand: func() float64 { return 0.999999 }}
	var got []time.Duration
	for range 6 {
		got = append(got, b.Next().Round(10*time.Millisecond))
	}
	want := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i := range want {
		if got[i] != want[i]*time.Millisecond {
			t.Fatalf("delays %v, want %v ms (upper end of the jitter)", got, want)
		}
	}
	b.Rand = func() float64 { return 0 }
	b.Reset()
	if d := b.Next(); d != 50*time.Millisecond {
		t.Fatalf("after Reset with no jitter: %s, want 50ms (half of Min)", d)
	}
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		start := time.Now()
		if err := b.Wait(ctx); !errors.Is(err, context.Canceled) {
			t.Fatalf("Wait on an ended context = %v", err)
		}
		if waited := time.Since(start); waited != 0 {
			t.Fatalf("Wait on an ended context waited %s", waited)
		}
		b.Reset()
		if err := b.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
		if waited := time.Since(start); waited != 50*time.Millisecond {
			t.Fatalf("Wait after Reset with no jitter waited %s, want 50ms", waited)
		}
	})
}

func TestDelayEdges(t *testing.T) {
	if d := Delay(0, time.Second, time.Minute, nil); d != 0 {
		t.Fatalf("no failure yet: %s, want 0", d)
	}
	if d := Delay(1000, time.Second, time.Minute, func() float64 { return 0 }); d != 30*time.Second {
		t.Fatalf("many failures, no jitter: %s, want half the 1m cap", d)
	}
}

func TestSleepStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if Sleep(ctx, time.Hour) {
		t.Fatal("Sleep reported a full hour on an ended context")
	}
}
