// Package freeport finds loopback ports for processes that will bind them
// later (consul, nginx, the demo's servers). Ports are drawn below the kernel's
// ephemeral range (32768 and up on Linux), where outgoing connections take
// their local ports: a port from there can be taken by some connection before
// the process gets to bind it. A process is never handed the same port twice:
// random picks for a hundred listeners would otherwise collide one run in three.
package freeport

import (
	"errors"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
)

var (
	mu     sync.Mutex
	handed = map[int]bool{}
)

// Get returns a loopback TCP port in 20000-31999 that was free a moment ago.
func Get() (int, error) {
	for range 100 {
		port := 20000 + rand.IntN(12000)
		if !claim(port) {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err == nil {
			l.Close()
			return port, nil
		}
	}
	return 0, errors.New("no free loopback port in 20000-31999")
}

// claim records port as handed out; false if it already was.
func claim(port int) bool {
	mu.Lock()
	defer mu.Unlock()
	if handed[port] {
		return false
	}
	handed[port] = true
	return true
}
