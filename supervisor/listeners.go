package supervisor

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A leftover that holds a listening socket is a server still accepting
// connections on the program's port: the new main process cannot bind until
// it has let go. After the stop signal a nginx worker closes its listening
// sockets at once but goes on finishing the calls it has (streams may take
// minutes), so waiting for it to exit would keep the port closed all that
// time. The supervisor therefore watches the listening sockets themselves.
//
// Except those lbctl holds too (it gave them to the program: BeforeStart's
// Extras): those stay open whatever the leftovers do, so the next process
// needs no port freed and starts at once; calls meanwhile wait in the
// kernel's accept queue for whoever accepts next.

// heldListener is one listening socket held by one process: fd's link in
// /proc/pid/fd is "socket:[inode]".
type heldListener struct {
	pid, fd int
	link    string
}

// listenersHeld returns the listening sockets (TCP, TCP6, UNIX) that the
// processes in pids hold. Sockets are matched by inode against pids[0]'s
// network namespace tables.
func listenersHeld(pids []int) []heldListener {
	if len(pids) == 0 {
		return nil
	}
	listening := listeningInodes(pids[0])
	if len(listening) == 0 {
		return nil
	}
	var held []heldListener
	for _, pid := range pids {
		for fd, link := range socketLinks(pid) {
			if listening[link] {
				held = append(held, heldListener{pid: pid, fd: fd, link: link})
			}
		}
	}
	return held
}

// socketLinks are pid's open sockets by fd, as /proc/pid/fd links name
// them ("socket:[inode]").
func socketLinks(pid int) map[int]string {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd/"
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	links := map[int]string{}
	for _, e := range entries {
		link, err := os.Readlink(dir + e.Name())
		if err != nil || !strings.HasPrefix(link, "socket:") {
			continue
		}
		if fd, err := strconv.Atoi(e.Name()); err == nil {
			links[fd] = link
		}
	}
	return links
}

// notHeldHere are the sockets of held that this process does not hold
// itself: the ones the next process has to bind again, and so must wait
// for the leftovers to close.
func notHeldHere(held []heldListener) []heldListener {
	if len(held) == 0 {
		return nil
	}
	own := map[string]bool{}
	for _, link := range socketLinks(os.Getpid()) {
		own[link] = true
	}
	return slices.DeleteFunc(slices.Clone(held), func(h heldListener) bool { return own[h.link] })
}

// listeningInodes is the set of listening sockets, as /proc/pid/fd links
// name them ("socket:[inode]"): TCP ones from the kernel's sock_diag (which
// walks only the listening table; /proc/net/tcp walks every bucket of the
// established table, 262144 here, ~6 ms a read), UNIX ones from pid's
// /proc/pid/net/unix. sock_diag answers for lbctl's network namespace,
// which is its children's.
func listeningInodes(pid int) map[string]bool {
	set := map[string]bool{}
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		if err := addTCPListeners(set, family); err != nil {
			break
		}
	}
	// UNIX: field 3 is the flags (__SO_ACCEPTCON 0x10000: listening), field 6 the inode.
	addInodes(set, "/proc/"+strconv.Itoa(pid)+"/net/unix", func(f [][]byte) (string, bool) {
		return field(f, 6), field(f, 3) == "00010000"
	})
	return set
}

// Sizes and offsets of the sock_diag structs (linux/inet_diag.h), which
// x/sys/unix does not define.
const (
	sizeofInetDiagReqV2 = 56 // family, protocol, ext, pad, states u32, inet_diag_sockid (48)
	inetDiagMsgInode    = 68 // family..retrans (4), sockid (48), expires, rqueue, wqueue, uid, then inode
	tcpListen           = 10 // TCP_LISTEN in include/net/tcp_states.h
)

// addTCPListeners adds the inodes of family's listening TCP sockets to set:
// one sock_diag dump, asked for the LISTEN state only.
func addTCPListeners(set map[string]bool, family uint8) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return fmt.Errorf("sock_diag socket: %w", err)
	}
	defer unix.Close(fd)
	req := make([]byte, unix.SizeofNlMsghdr+sizeofInetDiagReqV2)
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	body := req[unix.SizeofNlMsghdr:]
	body[0], body[1] = family, unix.IPPROTO_TCP
	ne.PutUint32(body[4:], 1<<tcpListen)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("sock_diag request: %w", err)
	}
	buf := make([]byte, 32<<10)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return fmt.Errorf("sock_diag answer: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return fmt.Errorf("sock_diag answer: %w", err)
		}
		for _, m := range msgs {
			switch {
			case m.Header.Type == unix.NLMSG_DONE:
				return nil
			case m.Header.Type == unix.NLMSG_ERROR:
				return fmt.Errorf("sock_diag: error answer")
			case len(m.Data) >= inetDiagMsgInode+4:
				set["socket:["+strconv.FormatUint(uint64(ne.Uint32(m.Data[inetDiagMsgInode:])), 10)+"]"] = true
			}
		}
	}
}

// addInodes adds to set the inode of every line of the /proc/net table at
// path that pick says is listening; the header line is skipped.
func addInodes(set map[string]bool, path string, pick func([][]byte) (inode string, listening bool)) {
	data, err := os.ReadFile(path)
	if err != nil {
		return
	}
	lines := bytes.Split(data, []byte("\n"))
	for _, line := range lines[min(1, len(lines)):] {
		if inode, ok := pick(bytes.Fields(line)); ok && inode != "" && inode != "0" {
			set["socket:["+inode+"]"] = true
		}
	}
}

func field(f [][]byte, i int) string {
	if i < len(f) {
		return string(f[i])
	}
	return ""
}

// stillHeld says whether h's process still holds h's socket at h's fd (a
// closed fd, a reused one or an exited process all say no).
func (h heldListener) stillHeld() bool {
	link, err := os.Readlink("/proc/" + strconv.Itoa(h.pid) + "/fd/" + strconv.Itoa(h.fd))
	return err == nil && link == h.link
}

// releasePoll is how often waitReleased looks: the kernel has no event for
// another process closing a socket, and each look is one readlink per
// listening socket still held.
const releasePoll = 2 * time.Millisecond

// waitReleased returns once none of held is held any more, or when ctx
// ends. Every gap between closing and the next look is time the port is
// closed, so it looks often; the fds were found once, so a look is cheap.
func waitReleased(ctx context.Context, held []heldListener) error {
	t := time.NewTicker(releasePoll)
	defer t.Stop()
	for {
		held = slices.DeleteFunc(held, func(h heldListener) bool { return !h.stillHeld() })
		if len(held) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}
