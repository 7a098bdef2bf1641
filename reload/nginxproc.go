package reload

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// ErrNoMaster means no nginx master is running to signal: the files are
// written and nginx reads them when it starts.
var ErrNoMaster = errors.New("no nginx master running")

// proc is one process, told apart from a later one reusing its pid by its
// start time (in clock ticks since boot).
type proc struct {
	pid   int
	start uint64
}

// PIDFromFile reads an nginx pid file. A missing file, or one naming a
// process that is gone, is ErrNoMaster.
func PIDFromFile(path string) (int, error) {
	if path == "" {
		return 0, fmt.Errorf("no pid file configured: %w", ErrNoMaster)
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("pid file %s: %w", path, ErrNoMaster)
	}
	if err != nil {
		return 0, fmt.Errorf("read pid file: %w", err)
	}
	if len(bytes.TrimSpace(b)) == 0 {
		// nginx -t creates the pid file, empty, when it is missing.
		return 0, fmt.Errorf("pid file %s is empty: %w", path, ErrNoMaster)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("pid file %s holds %q, not a pid", path, b)
	}
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return 0, fmt.Errorf("pid file %s names %d: %w", path, pid, ErrNoMaster)
	}
	return pid, nil
}

// children lists the child processes of pid from /proc/<pid>/task/*/children,
// falling back to scanning /proc for processes whose parent is pid.
func children(pid int) ([]proc, error) {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	if err != nil || len(tasks) == 0 {
		return scanChildren(pid)
	}
	var out []proc
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			return scanChildren(pid)
		}
		for _, f := range strings.Fields(string(b)) {
			c, _ := strconv.Atoi(f)
			if st, err := readStat(c); err == nil {
				out = append(out, proc{pid: c, start: st.start})
			}
		}
	}
	return out, nil
}

func scanChildren(pid int) ([]proc, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	var out []proc
	for _, e := range entries {
		c, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, err := readStat(c); err == nil && st.ppid == pid {
			out = append(out, proc{pid: c, start: st.start})
		}
	}
	return out, nil
}

type stat struct {
	state byte // R, S, D, Z (zombie: exited, not yet reaped)...
	ppid  int
	start uint64
}

// readStat reads the parent pid and start time from /proc/<pid>/stat.
func readStat(pid int) (stat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return stat{}, err
	}
	// The command name (field 2) may hold spaces; fields resume after its ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return stat{}, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return stat{}, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	ppid, _ := strconv.Atoi(f[1])
	start, _ := strconv.ParseUint(f[19], 10, 64)
	return stat{state: f[0][0], ppid: ppid, start: start}, nil
}

// alive reports whether p is still the same running process. An exited
// worker stays a zombie until the master reaps it, which nginx's master does
// only after its 100 ms post-reload sleep: a zombie counts as gone.
func (p proc) alive() bool {
	st, err := readStat(p.pid)
	return err == nil && st.start == p.start && st.state != 'Z'
}

// role is what nginx's process title says a child is doing.
type role int

const (
	roleOther    role = iota // not (yet) a worker: cache manager, or a fork still titled as the master
	roleWorker               // "nginx: worker process": accepting with the current config
	roleShutdown             // "nginx: worker process is shutting down": listeners closed
)

// roleOf reads the title nginx gives a child process (setproctitle shows in
// /proc/<pid>/cmdline). A worker told to quit retitles itself "worker process
// is shutting down" as it closes its listening sockets.
func roleOf(p proc) role {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p.pid))
	if err != nil {
		return roleOther
	}
	title := string(b)
	switch {
	case strings.Contains(title, "worker process is shutting down"):
		return roleShutdown
	case strings.Contains(title, "worker process"):
		return roleWorker
	}
	return roleOther
}
