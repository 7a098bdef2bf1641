package main

import (
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lbctl/lbctl/internal/testrig"
	"github.com/lbctl/lbctl/supervisor"
)

// socketLinks are pid's open sockets as /proc/pid/fd names them ("socket:[inode]").
func socketLinks(t *testing.T, pid int) map[int]string {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd/", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	links := map[int]string{}
	for _, e := range entries {
		fd, err := strconv.Atoi(e.Name())
		link, lerr := os.Readlink(dir + e.Name())
		if err == nil && lerr == nil && strings.HasPrefix(link, "socket:") {
			links[fd] = link
		}
	}
	return links
}

// ownListener is the link of the listening socket this process (lbctl run,
// in-process) holds at the address is says yes to.
func ownListener(t *testing.T, is func(unix.Sockaddr) bool) string {
	t.Helper()
	for fd, link := range socketLinks(t, os.Getpid()) {
		sa, err := unix.Getsockname(fd)
		if err != nil || !is(sa) {
			continue
		}
		if v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err == nil && v == 1 {
			return link
		}
	}
	t.Fatal("lbctl holds no such listening socket")
	return ""
}

func isTCP(addr string) func(unix.Sockaddr) bool {
	ap := netip.MustParseAddrPort(addr)
	return func(sa unix.Sockaddr) bool {
		in, ok := sa.(*unix.SockaddrInet4)
		return ok && in.Port == int(ap.Port()) && in.Addr == ap.Addr().As4()
	}
}

func isUnix(path string) func(unix.Sockaddr) bool {
	return func(sa unix.Sockaddr) bool {
		un, ok := sa.(*unix.SockaddrUnix)
		return ok && un.Name == path
	}
}

// waitNewMaster waits for nginx RUNNING with a master other than old.
func waitNewMaster(t *testing.T, socket string, old int) supervisor.Status {
	t.Helper()
	var st supervisor.Status
	testrig.WaitFor(t, 20*time.Second, "nginx RUNNING with a new master", func() error {
		if st = nginxStatus(t, socket); st.State != supervisor.Running || st.PID == old || st.PID == 0 {
			return fmt.Errorf("nginx %s pid %d (%s)", st.State, st.PID, st.Note)
		}
		return nil
	})
	return st
}

// expectHolds fails unless process pid holds every one of links.
func expectHolds(t *testing.T, what string, pid int, links ...string) {
	t.Helper()
	held := socketLinks(t, pid)
	for _, l := range links {
		if !slices.Contains(slices.Collect(maps.Values(held)), l) {
			t.Errorf("%s (pid %d) does not hold lbctl's socket %s; it holds %v", what, pid, l, held)
		}
	}
}

// lbctl run opens nginx's listening sockets itself: the service's port and,
// in live mode, the push socket (mode 0600). Every nginx master it starts
// holds those very sockets (the same inodes: inherited, not bound again),
// the one started after a crash included: the port never closed. (nginx
// says "using inherited sockets from "3;4;"" on stderr, before its error log
// is open.)
func TestRunNginxServesOnTheSocketsLbctlHolds(t *testing.T) {
	r := startLiveRun(t, testrig.StartGreeter(t, "alpha", "v1"))
	lb, socket, liveDir := r.lb, r.socket, r.liveDir
	first := waitNewMaster(t, socket, 0)

	port, push := ownListener(t, isTCP(lb)), ownListener(t, isUnix(filepath.Join(liveDir, "live.sock")))
	expectHolds(t, "the nginx master", first.PID, port, push)
	if fi, err := os.Stat(filepath.Join(liveDir, "live.sock")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("push socket: %v, %v; want mode 0600", fi.Mode(), err)
	}

	if err := syscall.Kill(first.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	next := waitNewMaster(t, socket, first.PID)
	expectHolds(t, "the master started after the crash", next.PID, port, push)
	testrig.ExpectInstance(t, lb, "alpha", 10*time.Second)
}
