package hosts

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Proc is one process run on a host (in its namespace), its output in a log file.
type Proc struct {
	Name string
	Host *Host
	Log  string // path of its stdout+stderr

	cmd    *exec.Cmd
	offset int64 // where this run's output starts in Log (a restart appends)
	exited chan struct{}
	err    error // Wait's result, once exited is closed
}

// Start runs bin with args on h (ip netns exec, which execs: the process is
// the program itself), in its own process group, logging to h.Dir/name.log.
// It dies with the test process, and is killed when the test ends.
func (h *Host) Start(name, bin string, args ...string) *Proc {
	t := h.net.t
	t.Helper()
	p := &Proc{Name: name, Host: h, Log: filepath.Join(h.Dir, name+".log"), exited: make(chan struct{})}
	f, err := os.OpenFile(p.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := f.Stat(); err == nil {
		p.offset = fi.Size()
	}
	p.cmd = exec.Command("ip", append([]string{"netns", "exec", h.NS, bin}, args...)...)
	p.cmd.Dir = h.Dir
	p.cmd.Stdout, p.cmd.Stderr = f, f
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("%s on %s: %v", name, h.Name, err)
	}
	go func() { p.err = p.cmd.Wait(); f.Close(); close(p.exited) }()
	h.mu.Lock()
	h.procs = append(h.procs, p)
	h.mu.Unlock()
	return p
}

// PID is the process's pid.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Exited is closed once the process has exited.
func (p *Proc) Exited() <-chan struct{} { return p.exited }

// Running is nil while the process runs, else an error with its log's tail.
func (p *Proc) Running() error {
	select {
	case <-p.exited:
		return fmt.Errorf("%s on %s exited (%v): %s", p.Name, p.Host.Name, p.err, p.Tail(1500))
	default:
		return nil
	}
}

// ExitCode is the process's exit code once it has exited (-1 for a signal).
func (p *Proc) ExitCode() int {
	<-p.exited
	return p.cmd.ProcessState.ExitCode()
}

// Signal sends sig to the process.
func (p *Proc) Signal(sig syscall.Signal) { p.cmd.Process.Signal(sig) }

// Wait waits up to timeout for the process to exit.
func (p *Proc) Wait(timeout time.Duration) error {
	select {
	case <-p.exited:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("%s on %s still running after %s", p.Name, p.Host.Name, timeout)
	}
}

// Stop sends sig, waits up to grace, then kills the process group.
func (p *Proc) Stop(sig syscall.Signal, grace time.Duration) {
	p.Signal(sig)
	if p.Wait(grace) != nil {
		syscall.Kill(-p.PID(), syscall.SIGKILL)
		<-p.exited
	}
}

// Output is everything the process has logged so far.
func (p *Proc) Output() string {
	b, _ := os.ReadFile(p.Log)
	if int64(len(b)) < p.offset {
		return ""
	}
	return string(b[p.offset:])
}

// Tail is the last n bytes of the log.
func (p *Proc) Tail(n int) string {
	s := p.Output()
	if len(s) > n {
		s = s[len(s)-n:]
	}
	return s
}

// Lines are the log lines that contain every one of words.
func (p *Proc) Lines(words ...string) []string {
	var out []string
next:
	for _, line := range strings.Split(p.Output(), "\n") {
		for _, w := range words {
			if !strings.Contains(line, w) {
				continue next
			}
		}
		out = append(out, line)
	}
	return out
}

// killAll kills every process started on h, process groups included, and
// whatever else runs in its namespace.
func (h *Host) killAll() {
	h.mu.Lock()
	procs := append([]*Proc(nil), h.procs...)
	h.mu.Unlock()
	for _, p := range procs {
		select {
		case <-p.exited:
		default:
			syscall.Kill(-p.PID(), syscall.SIGKILL)
		}
	}
	killPIDs(h.NS)
	for _, p := range procs {
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
		}
	}
}
