package shift

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"reflect"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/lbctl/lbctl/internal/latest"
	"github.com/lbctl/lbctl/internal/view"
)

// Watcher follows every split under SplitPrefix with blocking queries and
// sends the valid ones, by service, after each change. An invalid split is
// logged and left out: its service renders as if it had no split.
type Watcher struct {
	kv  *api.KV
	log *slog.Logger
	// WaitTime bounds one blocking query; MinGap is the least time between
	// two queries' starts; MaxBackoff caps the wait after failures.
	WaitTime, MinGap, MaxBackoff time.Duration
}

// NewWatcher watches splits through client.
func NewWatcher(client *api.Client, log *slog.Logger) *Watcher {
	return &Watcher{kv: client.KV(), log: log.With("component", "shift-watch"),
		WaitTime: 5 * time.Minute, MinGap: 20 * time.Millisecond, MaxBackoff: view.DefaultMaxBackoff}
}

// Run sends the splits on out (capacity 1: latest wins) whenever they
// change, until ctx ends.
func (w *Watcher) Run(ctx context.Context, out chan map[string]Split) error {
	v := view.New(w.fetch, equalSplits)
	v.MinGap, v.MaxBackoff = w.MinGap, w.MaxBackoff
	// A Consul server just elected answers from its past until it has
	// applied its log: an older split would move traffic back. An index
	// that went backwards is asked again with a read that waits for that.
	v.Confirm = func(ctx context.Context) (map[string]Split, uint64, error) {
		return w.list(ctx, &api.QueryOptions{RequireConsistent: true})
	}
	v.OnError = func(err error, failures int) {
		if failures == 1 || failures%10 == 0 {
			w.log.Warn("reading splits failed; keeping the last ones", "failures", failures, "err", err)
		}
	}
	err := v.Run(ctx, func(splits map[string]Split, _ uint64) error { return latest.Send(ctx, out, splits) })
	if ctx.Err() != nil {
		return nil // shutting down, not a failure
	}
	return err
}

// Once reads the splits once.
func (w *Watcher) Once(ctx context.Context) (map[string]Split, error) {
	splits, _, err := w.fetch(ctx, 0)
	return splits, err
}

func (w *Watcher) fetch(ctx context.Context, index uint64) (map[string]Split, uint64, error) {
	return w.list(ctx, &api.QueryOptions{WaitIndex: index, WaitTime: w.WaitTime})
}

// list reads the splits with opts.
func (w *Watcher) list(ctx context.Context, opts *api.QueryOptions) (map[string]Split, uint64, error) {
	pairs, meta, err := w.kv.List(SplitPrefix, opts.WithContext(ctx))
	if err != nil {
		return nil, 0, fmt.Errorf("list %s: %w", SplitPrefix, err)
	}
	splits, bad := List(pairs)
	for _, err := range bad {
		w.log.Warn("ignoring an invalid split", "err", err)
	}
	return splits, meta.LastIndex, nil
}

func equalSplits(a, b map[string]Split) bool {
	return maps.EqualFunc(a, b, func(x, y Split) bool { return reflect.DeepEqual(x, y) })
}
