package testrig

import (
	"io"
	"net"
	"testing"
)

// A held port fails connections, as a stopped server does, and no one else
// can take it, on TCP or UDP, until it is released, even while it still
// has connections in TIME_WAIT.
func TestHeldPortsFailConnectionsAndKeepOthersOff(t *testing.T) {
	port := FreePort(t)
	addr := LoopbackAddr(port)
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	s.Close() // the server closes first: TIME_WAIT on its port
	c.Read(make([]byte, 1))
	c.Close()
	l.Close()

	h, err := holdPorts([]int{port}, []int{port})
	if err != nil {
		t.Fatal(err)
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		if n, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("read from a held port: %d bytes, %v; want EOF", n, err)
		}
		c.Close()
	}
	if l, err := net.Listen("tcp", addr); err == nil {
		l.Close()
		t.Error("listened on a held TCP port")
	}
	if u, err := net.ListenPacket("udp", addr); err == nil {
		u.Close()
		t.Error("bound a held UDP port")
	}
	h.release()
	if l, err = net.Listen("tcp", addr); err != nil {
		t.Fatalf("listen once released: %v", err)
	}
	l.Close()
	u, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatalf("bind UDP once released: %v", err)
	}
	u.Close()
}
