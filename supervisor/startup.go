package supervisor

// StartedUp reports whether start-up is over: Run has begun and every
// autostart program has left STOPPED and STARTING (it is RUNNING, or has
// already ended up in BACKOFF, EXITED or FATAL). Programs waiting for a gate
// or a dependency are still STOPPED, so it stays false until they start.
// Wait on Changes to learn when to ask again.
func (s *Supervisor) StartedUp() bool {
	s.mu.Lock()
	running := s.running
	s.mu.Unlock()
	if !running {
		return false
	}
	for _, p := range s.snapshot() {
		if !p.spec.Autostart {
			continue
		}
		if st := p.status().State; st == Stopped || st == Starting {
			return false
		}
	}
	return true
}
