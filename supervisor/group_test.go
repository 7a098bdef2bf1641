package supervisor

import (
	"context"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// aliveAtRestart starts a harness whose OnTransition records, at the moment
// the program is RUNNING again with a new process, whether the process in
// *child was still alive.
func aliveAtRestart(t *testing.T, p Program) (h *harness, child *atomic.Int64, atRestart *atomic.Int32) {
	child, atRestart = &atomic.Int64{}, &atomic.Int32{}
	atRestart.Store(-1)
	opts := Options{OnTransition: func(tr Transition) {
		if c := child.Load(); c != 0 && tr.To == Running {
			if alive(int(c)) {
				atRestart.Store(1)
			} else {
				atRestart.Store(0)
			}
		}
	}}
	return startWith(t, opts, p), child, atRestart
}

// crashAndRestart waits for parent to be RUNNING and to print ready, kills
// its main process with SIGKILL and waits for the restart: the child it
// printed must be gone by then.
func crashAndRestart(t *testing.T, h *harness, child *atomic.Int64, atRestart *atomic.Int32, ready string) {
	t.Helper()
	first := h.waitState("parent", Running).PID
	h.waitOutput(ready)
	h.waitOutput("parent | child ") // the two shells print in either order
	child.Store(int64(childPID(t, h.out.String(), "parent | child ")))
	if err := syscall.Kill(first, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	h.waitUntil("restart", func() bool { return atRestart.Load() >= 0 })
	if atRestart.Load() != 0 {
		t.Fatalf("child %d still alive when the program was restarted", child.Load())
	}
}

// A main process killed with SIGKILL leaves a child in its process group
// (as a nginx master leaves its workers): the child gets the stop signal and
// is gone before the program runs again.
func TestLeftoversOfACrashAreEndedBeforeTheRestart(t *testing.T) {
	h, child, atRestart := aliveAtRestart(t, prog("parent", `sleep 100 & echo child $!; wait`))
	crashAndRestart(t, h, child, atRestart, "parent | child ")
	if st, _ := h.sup.StatusOf("parent"); st.Restarts != 1 || st.LastExit == nil || st.LastExit.Signal != "KILL" {
		t.Errorf("status %+v, want 1 restart after signal KILL", st)
	}
}

// A leftover that ignores the stop signal is killed after stopwaitsecs, and
// only then is the program started again.
func TestLeftoversIgnoringTheStopSignalAreKilled(t *testing.T) {
	p := prog("parent", `sh -c "trap '' TERM; echo ready; exec sleep 100" & echo child $!; wait`)
	p.StopWait = 200 * time.Millisecond
	h, child, atRestart := aliveAtRestart(t, p)
	crashAndRestart(t, h, child, atRestart, "parent | ready")
	var stopping *Transition
	for _, tr := range h.rec.all() {
		if tr.Program == "parent" && tr.To == Stopping {
			stopping = &tr
		}
	}
	if stopping == nil || stopping.PID != 0 {
		t.Errorf("transitions %+v: want STOPPING with no pid while the group is ended", h.rec.all())
	}
}

// Asked to stop while its leftovers are being ended, the program ends up
// STOPPED, not restarted.
func TestStopWhileEndingLeftoversStops(t *testing.T) {
	p := prog("parent", `sh -c "trap '' TERM; echo ready; exec sleep 100" & echo child $!; wait`)
	p.StopWait = 300 * time.Millisecond
	h := start(t, p)
	first := h.waitState("parent", Running).PID
	h.waitOutput("parent | ready")
	if err := syscall.Kill(first, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	st := h.waitState("parent", Stopping)
	if st.PID != 0 || !strings.Contains(st.Note, "left in process group") {
		t.Errorf("while ending leftovers: %+v, want no pid and a note saying so", st)
	}
	if err := h.sup.Stop(context.Background(), "parent"); err != nil {
		t.Fatal(err)
	}
	if st, _ := h.sup.StatusOf("parent"); st.State != Stopped || st.Restarts != 0 {
		t.Errorf("after stop: %+v, want STOPPED, never restarted", st)
	}
}

// A failed start says why: the last line the process wrote is in the
// BACKOFF and FATAL notes and in the last exit.
func TestFailedStartShowsTheLastOutputLine(t *testing.T) {
	p := prog("binder", `echo starting; echo "[emerg] still could not bind()" >&2; exit 1`)
	p.StartSecs = time.Second
	p.StartRetries = 1
	h := start(t, p)
	backoff := h.waitState("binder", Backoff)
	st := h.waitState("binder", Fatal)
	for _, note := range []string{backoff.Note, st.Note} {
		if !strings.HasSuffix(note, ": [emerg] still could not bind()") {
			t.Errorf("note %q, want the last output line at its end", note)
		}
	}
	if st.LastExit == nil || st.LastExit.Output != "[emerg] still could not bind()" {
		t.Errorf("last exit %+v, want its output", st.LastExit)
	}
}

// listenersHeld finds this process's listening TCP socket and stillHeld
// sees it closed.
func TestListenersHeldFindsAListeningSocketAndSeesItClosed(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rc, err := l.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var fd int
	_ = rc.Control(func(f uintptr) { fd = int(f) })
	held := slices.DeleteFunc(listenersHeld([]int{os.Getpid()}), func(h heldListener) bool { return h.fd != fd })
	if len(held) != 1 {
		t.Fatalf("listening socket at fd %d not found", fd)
	}
	l.Close()
	if err := waitReleased(t.Context(), held); err != nil {
		t.Fatal(err)
	}
}

// passedListener is a listening socket for BeforeStart to pass on, and its
// /proc link ("socket:[inode]").
func passedListener(t *testing.T) (*os.File, string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	f, err := l.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	link, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	return f, link
}

// BeforeStart's files and environment reach every process started, and a
// crash's leftover holding only a listening socket that this process holds
// too (it passed it) does not hold the restart back: the socket stays open,
// so the next process starts while the leftover is still there.
func TestPassedListeningSocketDoesNotWaitForLeftovers(t *testing.T) {
	f, link := passedListener(t)
	p := prog("parent", `sh -c "trap '' TERM; exec sleep 100" & echo child $!; echo fd3 $(readlink /proc/$$/fd/3) $PASSED; wait`)
	p.Autostart, p.StopWait = false, 10*time.Second
	h, child, atRestart := aliveAtRestart(t, p)
	h.sup.BeforeStart("parent", func() (Extras, error) {
		return Extras{Files: []*os.File{f}, Env: []string{"PASSED=yes"}}, nil
	})
	if err := h.sup.Start(context.Background(), "parent"); err != nil {
		t.Fatal(err)
	}
	first := h.waitState("parent", Running).PID
	passed := "parent | fd3 " + link + " yes"
	h.waitOutput(passed)
	h.waitOutput("parent | child ")
	child.Store(int64(childPID(t, h.out.String(), "parent | child ")))
	t.Cleanup(func() { killChildren(h.out.String(), "parent | child ") }) // they ignore the stop signal
	if err := syscall.Kill(first, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	h.waitUntil("restart", func() bool { return atRestart.Load() >= 0 })
	if atRestart.Load() != 1 {
		t.Errorf("child %d gone when the program was restarted: the restart waited for it to close a socket that stays open anyway", child.Load())
	}
	h.waitOutputCount(passed, 2)
}

// killChildren sends SIGKILL to every pid printed after prefix.
func killChildren(out, prefix string) {
	for _, line := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(line, prefix); ok {
			if pid, err := strconv.Atoi(strings.TrimSpace(rest)); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
}
