package listensock

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
)

// ErrClosed is Open's error once the set is closed.
var ErrClosed = errors.New("listening sockets closed")

// Set holds listening sockets open, one per address, until they are no
// longer wanted. Its zero value is ready to use; it is safe for concurrent use.
type Set struct {
	mu     sync.Mutex
	held   map[Addr]*os.File
	closed bool
}

// Open returns the sockets for want, in want's order, each address once:
// those held already, the others opened now. Sockets held for addresses not
// in want are closed. An address that cannot be opened is left out, and
// the error says which and why; the files returned are good either way.
func (s *Set) Open(want []Addr) ([]*os.File, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	errs := []error{s.keepLocked(want)}
	if s.held == nil {
		s.held = map[Addr]*os.File{}
	}
	var files []*os.File
	for i, a := range want {
		if slices.Contains(want[:i], a) {
			continue
		}
		f, ok := s.held[a]
		if !ok {
			var err error
			if f, err = Open(a); err != nil {
				errs = append(errs, err)
				continue
			}
			s.held[a] = f
		}
		files = append(files, f)
	}
	return files, errors.Join(errs...)
}

// Keep closes the sockets held for addresses not in want.
func (s *Set) Keep(want []Addr) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.keepLocked(want)
}

func (s *Set) keepLocked(want []Addr) error {
	var errs []error
	for a, f := range s.held {
		if !slices.Contains(want, a) {
			errs = append(errs, closeSocket(a, f))
			delete(s.held, a)
		}
	}
	return errors.Join(errs...)
}

// Close closes every socket held; Open fails from then on.
func (s *Set) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return s.keepLocked(nil)
}

// closeSocket closes f and removes a unix socket's file: the processes
// that were given the socket keep their copies, but none can be reached
// through the path any more.
func closeSocket(a Addr, f *os.File) error {
	err := f.Close()
	if a.Network == "unix" {
		if rerr := os.Remove(a.Address); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			err = errors.Join(err, rerr)
		}
	}
	if err != nil {
		return fmt.Errorf("close %s: %w", a, err)
	}
	return nil
}
