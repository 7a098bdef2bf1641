package shift

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"reflect"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/lbctl/lbctl/internal/backoff"
	"github.com/lbctl/lbctl/internal/latest"
)

// Watcher follows every split under SplitPrefix with blocking queries and
// sends the valid ones, by service, after each change. An invalid split is
// logged and left out: its service renders as if it had no split.
type Watcher struct {
	kv  *api.KV
	log *slog.Logger
	// WaitTime bounds one blocking query; MinGap spaces queries out.
	WaitTime, MinGap, MaxBackoff time.Duration
}

// NewWatcher watches splits through client.
func NewWatcher(client *api.Client, log *slog.Logger) *Watcher {
	return &Watcher{kv: client.KV(), log: log.With("component", "shift-watch"),
		WaitTime: 5 * time.Minute, MinGap: 20 * time.Millisecond, MaxBackoff: 5 * time.Second}
}

// Run sends the splits on out (capacity 1: latest wins) whenever they
// change, until ctx ends.
func (w *Watcher) Run(ctx context.Context, out chan map[string]Split) error {
	var (
		index    uint64
		last     map[string]Split
		sent     bool
		failures int
	)
	for ctx.Err() == nil {
		splits, meta, err := w.fetch(ctx, index)
		if err != nil && ctx.Err() != nil {
			break // shutting down, not a failure
		}
		if err != nil {
			failures++
			if failures == 1 || failures%10 == 0 {
				w.log.Warn("reading splits failed; keeping the last ones", "failures", failures, "err", err)
			}
			if !backoff.Sleep(ctx, backoff.Delay(failures+1, w.MinGap, w.MaxBackoff, nil)) {
				break
			}
			continue
		}
		failures = 0
		index = nextIndex(index, meta.LastIndex)
		if !sent || !equalSplits(last, splits) {
			last, sent = splits, true
			if err := latest.Send(ctx, out, splits); err != nil {
				break
			}
		}
		backoff.Sleep(ctx, w.MinGap+rand.N(w.MinGap+1))
	}
	return nil
}

// Once reads the splits once.
func (w *Watcher) Once(ctx context.Context) (map[string]Split, error) {
	splits, _, err := w.fetch(ctx, 0)
	return splits, err
}

func (w *Watcher) fetch(ctx context.Context, index uint64) (map[string]Split, *api.QueryMeta, error) {
	opts := (&api.QueryOptions{WaitIndex: index, WaitTime: w.WaitTime}).WithContext(ctx)
	pairs, meta, err := w.kv.List(SplitPrefix, opts)
	if err != nil {
		return nil, nil, fmt.Errorf("list %s: %w", SplitPrefix, err)
	}
	splits, bad := List(pairs)
	for _, err := range bad {
		w.log.Warn("ignoring an invalid split", "err", err)
	}
	return splits, meta, nil
}

// nextIndex applies Consul's blocking-query rules: an index that went
// backwards resets to 0.
func nextIndex(prev, got uint64) uint64 {
	if got < prev {
		return 0
	}
	return got
}

func equalSplits(a, b map[string]Split) bool {
	return maps.EqualFunc(a, b, func(x, y Split) bool { return reflect.DeepEqual(x, y) })
}
