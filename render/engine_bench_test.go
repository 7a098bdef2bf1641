package render

import (
	"fmt"
	"log/slog"
	"testing"

	"github.com/lbctl/lbctl/catalog"
	"github.com/lbctl/lbctl/config"
)

// BenchmarkEngineOneChanged measures what the engine does with each
// snapshot after one Consul change, in reload and live mode: describe the
// change for the log line, then render (every other block from the cache).
func BenchmarkEngineOneChanged(b *testing.B) {
	for _, mode := range []string{"reload", "live"} {
		for _, n := range []int{100, 1000} {
			services, snap := benchInput(n)
			cfg := &config.Config{Services: services}
			cfg.Nginx.ServicesConf = "/dev/null"
			if mode == "live" {
				cfg.Nginx.LiveUpstreams = true
				cfg.Nginx.LiveDir = "/tmp/live"
			}
			e := NewEngine(cfg, nil, nil, nil, slog.New(slog.DiscardHandler))
			q := QueryOf(services[0])
			changed := snap.Instances[q]
			alt := append([]catalog.Instance(nil), changed[1:]...)
			prev := snap
			e.renderBuiltin(snap, nil, map[string]bool{})
			seen := map[string]bool{}
			b.Run(fmt.Sprintf("%s/services=%d", mode, n), func(b *testing.B) {
				b.ReportAllocs()
				flip := false
				for b.Loop() {
					flip = !flip
					next := catalog.Snapshot{Instances: make(map[catalog.Query][]catalog.Instance, n)}
					for k, v := range prev.Instances {
						next.Instances[k] = v
					}
					if flip {
						next.Instances[q] = alt
					} else {
						next.Instances[q] = changed
					}
					e.describeChanges(&prev, next)
					e.renderBuiltin(next, nil, seen)
					prev = next
				}
			})
		}
	}
}
