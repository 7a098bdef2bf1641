package listensock

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/lbctl/lbctl/internal/testrig"
)

func TestFromListenReadsListenAsNginxDoes(t *testing.T) {
	for _, c := range []struct {
		listen string
		want   Addr
	}{
		{"5000", Addr{"tcp4", "0.0.0.0:5000"}},
		{"*:5000", Addr{"tcp4", "0.0.0.0:5000"}},
		{"127.0.0.1:5000", Addr{"tcp4", "127.0.0.1:5000"}},
		{"[::]:5000", Addr{"tcp6", "[::]:5000"}},
		{"[::1]:5000", Addr{"tcp6", "[::1]:5000"}},
		{"[::ffff:127.0.0.1]:5000", Addr{"tcp6", "[::ffff:127.0.0.1]:5000"}},
		{"unix:/run/lbctl/live.sock", Addr{"unix", "/run/lbctl/live.sock"}},
	} {
		got, err := FromListen(c.listen)
		if err != nil || got != c.want {
			t.Errorf("FromListen(%q) = %+v, %v; want %+v", c.listen, got, err, c.want)
		}
	}
	if _, err := FromListen("localhost:5000"); !errors.Is(err, ErrHostName) {
		t.Errorf("host name: %v, want ErrHostName", err)
	}
	for _, bad := range []string{"", "0", "70000", "127.0.0.1:x"} {
		if a, err := FromListen(bad); err == nil {
			t.Errorf("FromListen(%q) = %+v, want an error", bad, a)
		}
	}
}

func port(t *testing.T) string { return strconv.Itoa(testrig.FreePort(t)) }

func sockopt(t *testing.T, f *os.File, level, opt int) int {
	t.Helper()
	v, err := unix.GetsockoptInt(int(f.Fd()), level, opt)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// An opened socket listens with nginx's options, stays non-blocking when
// its fd is taken to pass it on, and queues connections nobody accepts yet.
func TestOpenListensAsNginxWouldAndQueuesConnections(t *testing.T) {
	for _, a := range []Addr{
		{"tcp4", net.JoinHostPort("127.0.0.1", port(t))},
		{"tcp6", net.JoinHostPort("::1", port(t))},
	} {
		f, err := Open(a)
		if err != nil {
			if a.Network == "tcp6" && errors.Is(err, syscall.EADDRNOTAVAIL) {
				t.Logf("no IPv6 loopback: %v", err)
				continue
			}
			t.Fatal(err)
		}
		if sockopt(t, f, unix.SOL_SOCKET, unix.SO_ACCEPTCONN) != 1 || sockopt(t, f, unix.SOL_SOCKET, unix.SO_REUSEADDR) != 1 {
			t.Errorf("%s: not a listening socket with SO_REUSEADDR", a)
		}
		if a.Network == "tcp6" && sockopt(t, f, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY) != 1 {
			t.Errorf("%s: not IPv6 only", a)
		}
		if flags, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0); err != nil || flags&unix.O_NONBLOCK == 0 {
			t.Errorf("%s: flags %#x (%v), want O_NONBLOCK after Fd", a, flags, err)
		}
		c, err := net.Dial("tcp", a.Address)
		if err != nil {
			t.Errorf("%s: dial with nobody accepting yet: %v, want it queued", a, err)
		} else {
			c.Close()
		}
		f.Close()
	}
}

// A unix socket replaces a stale one, has mode 0600, and its file goes
// when the set closes it.
func TestUnixSocketIsPrivateReplacesAStaleOneAndIsRemoved(t *testing.T) {
	path := filepath.Join(t.TempDir(), "live.sock")
	stale, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close() // the file stays, as a killed process leaves it
	var s Set
	files, err := s.Open([]Addr{Unix(path)})
	if err != nil || len(files) != 1 {
		t.Fatalf("Open: %v, %v", files, err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("socket file %v, %v; want a socket with mode 0600", fi.Mode(), err)
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	c.Close()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file after Close: %v, want it gone", err)
	}
	if _, err := s.Open([]Addr{Unix(path)}); !errors.Is(err, ErrClosed) {
		t.Errorf("Open after Close: %v, want ErrClosed", err)
	}
}

// The set hands out the socket it holds, once per address, opens what is
// new, closes what is no longer wanted, and says what it could not open.
func TestSetKeepsOpensAndClosesByAddress(t *testing.T) {
	a := Addr{"tcp4", net.JoinHostPort("127.0.0.1", port(t))}
	b := Addr{"tcp4", net.JoinHostPort("127.0.0.1", port(t))}
	var s Set
	t.Cleanup(func() { s.Close() })
	first, err := s.Open([]Addr{a})
	if err != nil {
		t.Fatal(err)
	}
	again, err := s.Open([]Addr{a, b, a})
	if err != nil || len(again) != 2 || again[0] != first[0] {
		t.Fatalf("Open again: %v, %v; want a's socket, then b's", again, err)
	}
	if err := s.Keep([]Addr{b}); err != nil {
		t.Fatal(err)
	}
	if c, err := net.Dial("tcp", a.Address); err == nil {
		c.Close()
		t.Errorf("%s still accepts connections after Keep dropped it", a)
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	taken := Addr{"tcp4", busy.Addr().String()}
	files, err := s.Open([]Addr{taken, b})
	if !errors.Is(err, syscall.EADDRINUSE) || len(files) != 1 || files[0] != again[1] {
		t.Errorf("Open with a taken address: %v, %v; want b's socket and EADDRINUSE", files, err)
	}
}
