package reload

import (
	"fmt"
	"log/slog"
	"sync"

	"github.com/lbctl/lbctl/live"
)

// seedWriter keeps the live upstreams seed file (what a starting nginx
// loads) up to date off the push path. At 1,000 upstreams encoding and
// writing it took ~36 ms, during which the next instance change would wait;
// Later hands the set to a goroutine instead, and the newest set handed
// wins. Now writes at once, for when the seed is the only delivery (no
// nginx runs). Writes never overlap, and a set never replaces a newer one.
type seedWriter struct {
	seed *live.Seed
	log  *slog.Logger

	file    sync.Mutex // held while the file is written
	mu      sync.Mutex
	pending live.Set      // for the goroutine; nil: none
	running bool          // the goroutine runs
	idle    chan struct{} // closed when the running goroutine is done
	seeded  live.Set      // the file's content
}

func newSeedWriter(path string, log *slog.Logger) *seedWriter {
	return &seedWriter{seed: live.NewSeed(path), log: log}
}

// Wait returns once no set handed to Later is left to write.
func (s *seedWriter) Wait() {
	s.mu.Lock()
	if !s.running {
		s.mu.Unlock()
		return
	}
	idle := s.idle
	s.mu.Unlock()
	<-idle
}

// Now writes set unless the file holds it already; a set handed to Later
// and not yet written is dropped, set being newer.
func (s *seedWriter) Now(set live.Set) error {
	s.file.Lock()
	defer s.file.Unlock()
	s.mu.Lock()
	s.pending = nil
	s.mu.Unlock()
	return s.write(set)
}

// Later has set written in the background.
func (s *seedWriter) Later(set live.Set) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pending = set
	if !s.running {
		s.running, s.idle = true, make(chan struct{})
		go s.drain()
	}
}

// drain writes the pending set until there is none.
func (s *seedWriter) drain() {
	for {
		s.file.Lock()
		s.mu.Lock()
		set := s.pending
		s.pending = nil
		if set == nil {
			s.running = false
			close(s.idle)
			s.mu.Unlock()
			s.file.Unlock()
			return
		}
		s.mu.Unlock()
		if err := s.write(set); err != nil {
			s.log.Error("live upstreams seed not written; an nginx that starts now loads an older set until lbctl pushes it", "err", err)
		}
		s.file.Unlock()
	}
}

// write writes set unless the file holds it; s.file is held.
func (s *seedWriter) write(set live.Set) error {
	if sameVersions(s.seeded, set) {
		return nil
	}
	if err := s.seed.Write(set); err != nil {
		return fmt.Errorf("write live upstreams seed: %w", err)
	}
	s.seeded = set
	return nil
}
