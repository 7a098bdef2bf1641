package testrig

import (
	"errors"
	"io"
	"net"
	"sync"
)

// portHold keeps loopback ports taken while the process that owns them is
// stopped, so that no other process on the machine binds one meanwhile
// (tests and benchmarks of other checkouts draw ports from the same range).
// A TCP port is listened on and every connection closed at once, as a
// stopped server's would fail: a bound socket that does not listen would be
// refused, but it cannot be bound while the port has connections in
// TIME_WAIT, and does not keep another listener off the port.
type portHold struct {
	closers []io.Closer
	accepts sync.WaitGroup
}

// holdPorts takes each of tcp on TCP and each of udp on UDP, 127.0.0.1. A
// port it cannot take is in the error; the others are held all the same.
func holdPorts(tcp, udp []int) (*portHold, error) {
	h := &portHold{}
	var errs []error
	for _, p := range tcp {
		l, err := net.Listen("tcp", LoopbackAddr(p))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		h.closers = append(h.closers, l)
		h.accepts.Go(func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		})
	}
	for _, p := range udp {
		c, err := net.ListenPacket("udp", LoopbackAddr(p))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		h.closers = append(h.closers, c)
	}
	return h, errors.Join(errs...)
}

// release lets the ports go. A nil hold holds nothing.
func (h *portHold) release() {
	if h == nil {
		return
	}
	for _, c := range h.closers {
		c.Close()
	}
	h.accepts.Wait()
	h.closers = nil
}
