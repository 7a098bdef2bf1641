package render

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/lbctl/lbctl/catalog"
	"github.com/lbctl/lbctl/config"
	"github.com/lbctl/lbctl/internal/latest"
	"github.com/lbctl/lbctl/internal/testrig"
	"github.com/lbctl/lbctl/internal/trafficsplit"
)

// fakeSplits is a SplitSource the test feeds.
type fakeSplits struct {
	feed chan map[string]trafficsplit.Split
}

func (f *fakeSplits) Run(ctx context.Context, out chan map[string]trafficsplit.Split) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case s := <-f.feed:
			latest.Send(ctx, out, s)
		}
	}
}

func (f *fakeSplits) Once(ctx context.Context) (map[string]trafficsplit.Split, error) {
	return <-f.feed, nil
}

func splitAt(pct int) map[string]trafficsplit.Split {
	return map[string]trafficsplit.Split{"greeter": trafficsplit.Split{Service: "greeter", From: "blue", To: "green", State: trafficsplit.Running}.At(pct)}
}

func TestEngineRendersSplitsAsTheyChange(t *testing.T) {
	c := testrig.StartConsul(t)
	for i, tag := range []string{"blue", "green"} {
		c.Register(&api.AgentServiceRegistration{ID: "greeter-" + tag, Name: "greeter", Address: "127.0.0.1", Port: 7000 + i, Tags: []string{tag}})
	}
	cfg, err := config.Parse("t", []byte("services:\n  - {name: greeter, tag: blue, listen: 5000, shift: true}\n"), config.Options{})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	engine := NewEngine(cfg, catalog.NewWatcher(c.Client, Queries(cfg.Services), log), nil, nil, log)
	src := &fakeSplits{feed: make(chan map[string]trafficsplit.Split, 1)}
	engine.FollowSplits(src)

	src.feed <- splitAt(10)
	u, err := engine.Once(context.Background())
	if err != nil || !strings.Contains(string(u.Files[0].Data), "blue 90%, green 10%") {
		t.Fatalf("Once: %v\n%s", err, u.Files[0].Data)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	updates := make(chan Update, 1)
	go engine.Run(ctx, updates)
	for _, pct := range []int{50, 100} {
		src.feed <- splitAt(pct)
		want := fmt.Sprintf("blue %d%%, green %d%%", 100-pct, pct)
		deadline := time.After(10 * time.Second)
		for got := ""; !strings.Contains(got, want); {
			select {
			case u := <-updates:
				got = string(u.Files[0].Data)
			case <-deadline:
				t.Fatalf("no update rendering %q", want)
			}
		}
	}
}
