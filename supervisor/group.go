package supervisor

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A program's process group outlives its main process when the main process
// dies and leaves children behind: a nginx master killed with SIGKILL leaves
// its workers serving on the listening sockets they inherited, with the
// config they were started with, and the next master cannot bind. So after
// every exit the supervisor ends what is left of the group (the stop signal,
// SIGKILL after stopwaitsecs) before anything else happens to the program:
// until the group is gone or, when its members held listening sockets, until
// none does that the next process must bind again (listeners.go).

// groupExists says whether process group pgid has any member, zombies
// included: one kill(-pgid, 0).
func groupExists(pgid int) bool {
	return !errors.Is(syscall.Kill(-pgid, 0), syscall.ESRCH)
}

// groupMembers returns the live (not zombie) processes in process group pgid.
// groupExists answers the common case, an empty group, without reading
// /proc; a group that still exists is read from /proc/*/stat, where a member
// that has exited but is not yet reaped by its new parent shows as a zombie
// and is left out.
func groupMembers(pgid int) []int {
	if !groupExists(pgid) {
		return nil
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if g, live := pgrpOf(pid); live && g == pgid {
			pids = append(pids, pid)
		}
	}
	return pids
}

// pgrpOf reads a process's group from /proc/pid/stat and whether it is alive
// (not a zombie, not gone).
func pgrpOf(pid int) (pgrp int, live bool) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	// pid (comm) state ppid pgrp ...: comm may hold spaces and ')'.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, false
	}
	f := bytes.Fields(data[i+1:])
	if len(f) < 3 || f[0][0] == 'Z' || f[0][0] == 'X' {
		return 0, false
	}
	g, err := strconv.Atoi(string(f[2]))
	return g, err == nil
}

// waitGroupGone returns once process group pgid has no live member, or when
// ctx ends. It waits on each member's pidfd, which becomes readable when that
// process exits (it need not be lbctl's child), through Go's poller: no
// polling, no thread held. Members forked meanwhile are found by reading the
// group again once the known ones are gone.
func waitGroupGone(ctx context.Context, pgid int) error {
	for {
		pids := groupMembers(pgid)
		if len(pids) == 0 {
			return nil
		}
		for _, pid := range pids {
			if err := waitExit(ctx, pid); err != nil {
				return err
			}
		}
	}
}

// waitExit blocks until pid has exited (or is gone) or ctx ends.
func waitExit(ctx context.Context, pid int) error {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), "pidfd")
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { _ = f.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	err = rc.Read(func(fd uintptr) bool {
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 0)
		return n > 0 || (err != nil && !errors.Is(err, syscall.EINTR))
	})
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}
