package latest

import (
	"context"
	"testing"
)

func TestSendReplacesUnreadValue(t *testing.T) {
	ch := make(chan int, 1)
	for i := 1; i <= 3; i++ {
		if err := Send(context.Background(), ch, i); err != nil {
			t.Fatal(err)
		}
	}
	if got := <-ch; got != 3 {
		t.Fatalf("got %d, want the newest value 3", got)
	}
}

func TestSendOnUnbufferedStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Send(ctx, make(chan int), 1); err == nil {
		t.Fatal("want the context's error when nobody reads")
	}
}
