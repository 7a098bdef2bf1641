// Package listensock opens listening sockets the way nginx opens those of
// its listen directives, so that lbctl can hold them and hand them to every
// nginx master it starts (nginx's inherited sockets). A port held this way
// never closes while masters come and go: a call made while no master runs
// waits in the kernel's accept queue instead of being refused.
//
// A socket is what nginx 1.22 binds itself for a listen it does not
// inherit: SO_REUSEADDR, IPV6_V6ONLY on IPv6 (nginx's ipv6only=on default),
// backlog 511 (NGX_LISTEN_BACKLOG on Linux, which nginx also assumes for an
// inherited socket, so it never calls listen() again), non-blocking (nginx
// sets that only on sockets it opens: it leaves inherited ones as they come).
// A unix socket gets mode 0600 rather than nginx's 0666: only its owner
// connects.
package listensock

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Backlog is nginx's default listen backlog on Linux (NGX_LISTEN_BACKLOG).
const Backlog = 511

// unixMode is the mode of a unix socket's file.
const unixMode = 0o600

// Addr is where one listening socket listens.
type Addr struct {
	// Network is "tcp4", "tcp6" or "unix".
	Network string
	// Address is "IP:port" ("[IP]:port" for tcp6), or a unix socket's path.
	Address string
}

// String is the address as nginx's listen directive writes it.
func (a Addr) String() string {
	if a.Network == "unix" {
		return "unix:" + a.Address
	}
	return a.Address
}

// ErrHostName is FromListen's error for a listen on a host name: nginx
// resolves it itself, and may bind every address it resolves to.
var ErrHostName = errors.New("a host name, which nginx resolves itself")

// FromListen is the socket nginx binds for a listen directive's address:
// "5000" and "*:5000" are 0.0.0.0:5000, "[::]:5000" is IPv6 only,
// "127.0.0.1:5000" is as written, "unix:/path" a unix socket.
func FromListen(listen string) (Addr, error) {
	if path, ok := strings.CutPrefix(listen, "unix:"); ok {
		return Unix(path), nil
	}
	host, port := "", listen
	if h, p, err := net.SplitHostPort(listen); err == nil {
		host, port = h, p
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return Addr{}, fmt.Errorf("listen %q: want a port 1-65535", listen)
	}
	if host == "" || host == "*" {
		host = "0.0.0.0"
	}
	ip, err := netip.ParseAddr(host)
	switch {
	case err != nil:
		return Addr{}, fmt.Errorf("listen %q: %w", listen, ErrHostName)
	case ip.Is6():
		return Addr{Network: "tcp6", Address: net.JoinHostPort(ip.String(), port)}, nil
	}
	return Addr{Network: "tcp4", Address: net.JoinHostPort(ip.String(), port)}, nil
}

// Unix is a unix socket at path.
func Unix(path string) Addr { return Addr{Network: "unix", Address: path} }

// Open binds and listens on a. The file is created while the socket is still
// blocking, so that Go neither adds it to its poller nor makes it blocking
// again when it is passed to a child (os.File.Fd); only then is it made
// non-blocking. A stale unix socket file at a's path (one a killed process
// left) is removed first.
func Open(a Addr) (*os.File, error) {
	sa, family, err := a.sockaddr()
	if err != nil {
		return nil, err
	}
	if family == unix.AF_UNIX {
		if err := removeStale(a.Address); err != nil {
			return nil, err
		}
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("listen %s: socket: %w", a, err)
	}
	if err := bindAndListen(fd, family, sa, a); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("listen %s: %w", a, err)
	}
	f := os.NewFile(uintptr(fd), a.String())
	if err := unix.SetNonblock(fd, true); err != nil {
		f.Close()
		return nil, fmt.Errorf("listen %s: non-blocking: %w", a, err)
	}
	return f, nil
}

// bindAndListen sets nginx's options on fd, binds it to sa and listens.
func bindAndListen(fd, family int, sa unix.Sockaddr, a Addr) error {
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return fmt.Errorf("SO_REUSEADDR: %w", err)
	}
	if family == unix.AF_INET6 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); err != nil {
			return fmt.Errorf("IPV6_V6ONLY: %w", err)
		}
	}
	if err := unix.Bind(fd, sa); err != nil {
		return fmt.Errorf("bind: %w", err)
	}
	if family == unix.AF_UNIX {
		if err := os.Chmod(a.Address, unixMode); err != nil {
			return err
		}
	}
	if err := unix.Listen(fd, Backlog); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	return nil
}

// sockaddr is a as the kernel takes it, and its address family.
func (a Addr) sockaddr() (unix.Sockaddr, int, error) {
	if a.Network == "unix" {
		return &unix.SockaddrUnix{Name: a.Address}, unix.AF_UNIX, nil
	}
	ap, err := netip.ParseAddrPort(a.Address)
	if err != nil {
		return nil, 0, fmt.Errorf("listen %s: %w", a, err)
	}
	switch {
	case a.Network == "tcp4" && ap.Addr().Is4():
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}, unix.AF_INET, nil
	case a.Network == "tcp6" && ap.Addr().Is6():
		return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}, unix.AF_INET6, nil
	}
	return nil, 0, fmt.Errorf("listen %s: network %q does not fit the address", a, a.Network)
}

// removeStale removes a socket file at path; anything else there is an error.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("listen unix:%s: %w", path, err)
	case fi.Mode()&os.ModeSocket == 0:
		return fmt.Errorf("listen unix:%s: exists and is not a socket", path)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("listen unix:%s: stale socket: %w", path, err)
	}
	return nil
}
