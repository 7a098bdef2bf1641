package reload

import (
	"log/slog"
	"sync"
	"time"

	"github.com/lbctl/lbctl/metrics"
)

// generation is the workers a reload replaced, still finishing their
// connections after the reload told them to quit.
type generation struct {
	replacedAt time.Time
	workers    []proc
}

// generations tracks old nginx worker generations until their last worker exits.
type generations struct {
	mu   sync.Mutex
	gens []generation
	m    *metrics.Metrics
	log  *slog.Logger
}

func (g *generations) add(workers []proc, at time.Time) {
	if len(workers) == 0 {
		return
	}
	g.mu.Lock()
	g.gens = append(g.gens, generation{replacedAt: at, workers: workers})
	g.mu.Unlock()
	g.sweep()
}

// sweep forgets exited workers, records the lifetime of each generation that
// is now gone, and updates the gauges. It returns what is still alive.
func (g *generations) sweep() (gens, workers int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	kept := g.gens[:0]
	for _, gen := range g.gens {
		var alive []proc
		for _, w := range gen.workers {
			if w.alive() {
				alive = append(alive, w)
			}
		}
		if len(alive) == 0 {
			lived := time.Since(gen.replacedAt)
			g.m.OldGenerationLifetime.Observe(lived.Seconds())
			g.log.Debug("old nginx worker generation exited", "lived", lived)
			continue
		}
		gen.workers = alive
		kept = append(kept, gen)
		workers += len(alive)
	}
	g.gens = kept
	g.m.OldGenerations.Set(float64(len(kept)))
	g.m.OldWorkers.Set(float64(workers))
	return len(kept), workers
}
