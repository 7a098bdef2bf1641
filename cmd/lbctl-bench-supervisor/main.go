// Command lbctl-bench-supervisor runs the same programs under lbctl and
// under supervisord, side by side on this machine, and prints a table:
//
//   - restart: from SIGKILL of a running child to its replacement running
//     (the replacement's first act is to report in over a unix socket);
//   - shutdown: from SIGTERM to the supervisor's exit with 3 programs running
//     (the children exit at once on SIGTERM, so this is the supervisor's own cost);
//   - the supervisor's memory with 3 programs running, read after the
//     crash/restart rounds from /proc/PID/smaps_rollup: anonymous memory
//     (heap, stacks: what it costs), PSS, and RSS, whose file-backed rest is
//     clean binary pages the kernel can reclaim.
//
// -lbctl takes several binaries, comma-separated (a static and a PIE build,
// say); each is measured, directly and as PID 1, in the same run.
//
// The children are this binary itself ("child" mode), so both supervisors
// start the same thing. supervisord is Debian's (apt-get install supervisor);
// pass -install to have the bench install it when it is missing.
//
//	go run ./cmd/lbctl-bench-supervisor [-rounds 30] [-lbctl PATH[,PATH...]] [-install]
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/lbctl/lbctl/internal/procmem"
)

func main() {
	if len(os.Args) > 2 && os.Args[1] == "child" {
		child(os.Args[2], os.Args[3])
		return
	}
	rounds := flag.Int("rounds", 30, "crash/restart rounds per supervisor")
	shutdowns := flag.Int("shutdowns", 5, "start/SIGTERM rounds per supervisor")
	lbctl := flag.String("lbctl", "", "lbctl binaries, comma-separated (default: go build ./cmd/lbctl)")
	install := flag.Bool("install", false, "apt-get install supervisor if supervisord is missing")
	flag.Parse()
	if err := run(*rounds, *shutdowns, *lbctl, *install); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// child reports "name pid" on the notify socket, then waits to be killed.
func child(socket, name string) {
	c, err := net.Dial("unix", socket)
	if err != nil {
		os.Exit(3)
	}
	fmt.Fprintf(c, "%s %d\n", name, os.Getpid())
	time.Sleep(1000 * time.Hour) // until the supervisor stops or kills it
}

type result struct {
	name              string
	restarts          []time.Duration
	shutdowns         []time.Duration
	mem               procmem.Usage
	supervisorVersion string
}

func run(rounds, shutdowns int, lbctl string, install bool) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "lbctl-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if lbctl == "" {
		lbctl = filepath.Join(work, "lbctl")
		if out, err := exec.Command("go", "build", "-o", lbctl, "github.com/lbctl/lbctl/cmd/lbctl").CombinedOutput(); err != nil {
			return fmt.Errorf("build lbctl: %v\n%s", err, out)
		}
	}
	supervisord, err := findSupervisord(install)
	if err != nil {
		return err
	}
	_, err = exec.LookPath("unshare")
	asPID1 := err == nil && os.Geteuid() == 0
	bins := strings.Split(lbctl, ",")
	var subjects []subject
	for _, bin := range bins {
		l := lbctlSubject{bin: bin}
		if len(bins) > 1 {
			l.label = " (" + filepath.Base(bin) + ")"
		}
		subjects = append(subjects, l)
		if asPID1 {
			subjects = append(subjects, lbctlPID1Subject{l})
		}
	}
	subjects = append(subjects, supervisordSubject{bin: supervisord})
	baseline, err := directStarts(self, work, rounds)
	if err != nil {
		return fmt.Errorf("direct start: %w", err)
	}
	var results []result
	for _, s := range subjects {
		r, err := measure(s, self, work, rounds, shutdowns)
		if err != nil {
			return fmt.Errorf("%s: %w", s.name(), err)
		}
		results = append(results, r)
	}
	printTable(results, baseline, rounds, shutdowns)
	return nil
}

func findSupervisord(install bool) (string, error) {
	if p, err := exec.LookPath("supervisord"); err == nil {
		return p, nil
	}
	if !install {
		return "", errors.New("supervisord not found: apt-get install -y supervisor, or pass -install")
	}
	cmd := exec.Command("apt-get", "install", "-y", "supervisor")
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("apt-get install supervisor: %v\n%s", err, out)
	}
	return exec.LookPath("supervisord")
}

// subject is a supervisor under test.
type subject interface {
	name() string
	// command writes its config for programs (name -> argv) into dir and
	// returns the command that runs it in the foreground.
	command(dir string, programs map[string][]string) (*exec.Cmd, error)
	version() string
	// processes are the supervisor's own processes, once it runs cmd: the
	// first gets SIGTERM, RSS is summed over all.
	processes(cmd *exec.Cmd) ([]int, error)
}

func (lbctlSubject) processes(cmd *exec.Cmd) ([]int, error) { return []int{cmd.Process.Pid}, nil }
func (supervisordSubject) processes(cmd *exec.Cmd) ([]int, error) {
	return []int{cmd.Process.Pid}, nil
}

// lbctlPID1Subject is lbctl as PID 1 of a new PID namespace, as in a
// container: init and worker.
type lbctlPID1Subject struct{ lbctlSubject }

func (l lbctlPID1Subject) name() string { return "lbctl as PID 1" + l.label }
func (l lbctlPID1Subject) command(dir string, programs map[string][]string) (*exec.Cmd, error) {
	cmd, err := l.lbctlSubject.command(dir, programs)
	if err != nil {
		return nil, err
	}
	return exec.Command("unshare", append([]string{"--pid", "--fork", "--kill-child", "--mount-proc"}, cmd.Args...)...), nil
}
func (lbctlPID1Subject) processes(cmd *exec.Cmd) ([]int, error) {
	initPIDs := childrenOf(cmd.Process.Pid)
	if len(initPIDs) != 1 {
		return nil, fmt.Errorf("unshare has %d children, want 1", len(initPIDs))
	}
	out := []int{initPIDs[0]}
	exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", initPIDs[0]))
	for _, c := range childrenOf(initPIDs[0]) {
		if cexe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", c)); cexe == exe {
			out = append(out, c) // the worker
		}
	}
	if len(out) != 2 {
		return nil, fmt.Errorf("found init %d but no worker", initPIDs[0])
	}
	return out, nil
}

// childrenOf scans /proc for the children of pid.
func childrenOf(pid int) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", n))
		if err != nil {
			continue
		}
		fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
		if len(fields) > 1 && fields[1] == strconv.Itoa(pid) {
			out = append(out, n)
		}
	}
	return out
}

// lbctlSubject is lbctl run; label tells binaries apart when several are measured.
type lbctlSubject struct{ bin, label string }

func (l lbctlSubject) name() string { return "lbctl" + l.label }
func (l lbctlSubject) version() string {
	return "lbctl run (" + runtime.Version() + ")"
}
func (l lbctlSubject) command(dir string, programs map[string][]string) (*exec.Cmd, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "control:\n  socket: %s/lbctl.sock\nprograms:\n", dir)
	for _, name := range slices.Sorted(mapKeys(programs)) {
		fmt.Fprintf(&b, "  - name: %s\n    command: %s\n    startsecs: 0\n    autorestart: true\n    stopwaitsecs: 5\n", name, yamlList(programs[name]))
	}
	path := filepath.Join(dir, "lbctl.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return nil, err
	}
	return exec.Command(l.bin, "run", "-c", path, "--log-level", "warn"), nil
}

type supervisordSubject struct{ bin string }

func (supervisordSubject) name() string { return "supervisord" }
func (s supervisordSubject) version() string {
	out, _ := exec.Command(s.bin, "--version").Output()
	return "supervisord " + strings.TrimSpace(string(out))
}
func (s supervisordSubject) command(dir string, programs map[string][]string) (*exec.Cmd, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "[supervisord]\nnodaemon=true\nuser=root\nlogfile=%s/supervisord.log\npidfile=%s/supervisord.pid\nchildlogdir=%s\n", dir, dir, dir)
	for _, name := range slices.Sorted(mapKeys(programs)) {
		fmt.Fprintf(&b, "\n[program:%s]\ncommand=%s\nstartsecs=0\nautorestart=true\nstopwaitsecs=5\n"+
			"stdout_logfile=/dev/stdout\nstdout_logfile_maxbytes=0\nstderr_logfile=/dev/stderr\nstderr_logfile_maxbytes=0\n",
			name, strings.Join(programs[name], " "))
	}
	path := filepath.Join(dir, "supervisord.conf")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return nil, err
	}
	return exec.Command(s.bin, "-n", "-c", path), nil
}

func mapKeys(m map[string][]string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func yamlList(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = strconv.Quote(a)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// checkin is one child reporting in.
type checkin struct {
	name string
	pid  int
	at   time.Time
}

// listen accepts children's check-ins on a unix socket.
func listen(path string) (chan checkin, func(), error) {
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, nil, err
	}
	ch := make(chan checkin, 64)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				line, err := bufio.NewReader(c).ReadString('\n')
				at := time.Now()
				if err != nil {
					return
				}
				var ci checkin
				if _, err := fmt.Sscanf(line, "%s %d", &ci.name, &ci.pid); err != nil {
					return
				}
				// The pid as this process sees it: the child may be in
				// another PID namespace, where its own pid means something else.
				if ci.pid, err = peerPID(c); err != nil {
					return
				}
				ci.at = at
				ch <- ci
				// Keep c open: the child lives on.
			}()
		}
	}()
	return ch, func() { l.Close() }, nil
}

// peerPID is the pid of the process at the other end of a unix connection,
// translated by the kernel into this process's PID namespace.
func peerPID(c net.Conn) (int, error) {
	raw, err := c.(*net.UnixConn).SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *syscall.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if credErr != nil {
		return 0, credErr
	}
	return int(cred.Pid), nil
}

func measure(s subject, self, work string, rounds, shutdowns int) (result, error) {
	r := result{name: s.name(), supervisorVersion: s.version()}
	for i := 0; i < shutdowns; i++ {
		dir, err := os.MkdirTemp(work, s.name())
		if err != nil {
			return r, err
		}
		sock := filepath.Join(dir, "notify.sock")
		checkins, stop, err := listen(sock)
		if err != nil {
			return r, err
		}
		programs := map[string][]string{}
		for _, n := range []string{"one", "two", "three"} {
			programs[n] = []string{self, "child", sock, n}
		}
		cmd, err := s.command(dir, programs)
		if err != nil {
			stop()
			return r, err
		}
		devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
		if err != nil {
			stop()
			return r, err
		}
		cmd.Stdout, cmd.Stderr = devnull, devnull
		if err := cmd.Start(); err != nil {
			stop()
			return r, err
		}
		pids, err := waitCheckins(checkins, 3, nil)
		if err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			stop()
			return r, err
		}
		procs, err := s.processes(cmd)
		if err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			stop()
			return r, err
		}
		if i == 0 {
			if r.restarts, err = crashRounds(checkins, pids["one"].pid, rounds); err != nil {
				cmd.Process.Kill()
				cmd.Wait()
				stop()
				return r, err
			}
			// Read after the restarts: steady state, with the code a
			// restart runs paged in.
			r.mem = procmem.Usage{}
			for _, p := range procs {
				m, err := procmem.Of(p)
				if err != nil {
					cmd.Process.Kill()
					cmd.Wait()
					stop()
					return r, err
				}
				r.mem.RSS += m.RSS
				r.mem.PSS += m.PSS
				r.mem.Anonymous += m.Anonymous
			}
		}
		t0 := time.Now()
		syscall.Kill(procs[0], syscall.SIGTERM)
		err = cmd.Wait()
		r.shutdowns = append(r.shutdowns, time.Since(t0))
		devnull.Close()
		stop()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			return r, err
		}
	}
	return r, nil
}

// crashRounds SIGKILLs the child pid, waits for its replacement to check
// in, and repeats with the replacement.
func crashRounds(checkins chan checkin, pid, rounds int) ([]time.Duration, error) {
	var out []time.Duration
	for i := 0; i < rounds; i++ {
		t0 := time.Now()
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			return nil, fmt.Errorf("kill child: %w", err)
		}
		got, err := waitCheckins(checkins, 1, func(c checkin) bool { return c.name == "one" })
		if err != nil {
			return nil, err
		}
		out = append(out, got["one"].at.Sub(t0))
		pid = got["one"].pid
		// Let the supervisor settle, so rounds do not overlap.
		time.Sleep(50 * time.Millisecond)
	}
	return out, nil
}

// waitCheckins waits for n distinct children to check in (those keep accepts).
func waitCheckins(ch chan checkin, n int, keep func(checkin) bool) (map[string]checkin, error) {
	got := map[string]checkin{}
	deadline := time.After(20 * time.Second)
	for len(got) < n {
		select {
		case c := <-ch:
			if keep != nil && !keep(c) {
				continue
			}
			got[c.name] = c
		case <-deadline:
			return nil, fmt.Errorf("only %d of %d children checked in", len(got), n)
		}
	}
	return got, nil
}

func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[int(float64(len(s)-1)*p+0.5)]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }

// directStarts is the child's own start time, no supervisor: from fork+exec
// by this process to the child checking in. It is part of every restart figure.
func directStarts(self, work string, rounds int) ([]time.Duration, error) {
	sock := filepath.Join(work, "direct.sock")
	checkins, stop, err := listen(sock)
	if err != nil {
		return nil, err
	}
	defer stop()
	var out []time.Duration
	for i := 0; i < rounds; i++ {
		t0 := time.Now()
		cmd := exec.Command(self, "child", sock, "direct")
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		got, err := waitCheckins(checkins, 1, nil)
		cmd.Process.Kill()
		cmd.Wait()
		if err != nil {
			return nil, err
		}
		out = append(out, got["direct"].at.Sub(t0))
	}
	return out, nil
}

func printTable(results []result, baseline []time.Duration, rounds, shutdowns int) {
	fmt.Printf("machine: %d CPUs, %s, kernel %s\n", runtime.NumCPU(), cpuModel(), kernel())
	for _, r := range results {
		fmt.Printf("%s: %s\n", r.name, r.supervisorVersion)
	}
	fmt.Println()
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprint(tw, "measure")
	for _, r := range results {
		fmt.Fprintf(tw, "\t%s", r.name)
	}
	fmt.Fprintln(tw)
	row := func(label string, f func(result) string) {
		fmt.Fprint(tw, label)
		for _, r := range results {
			fmt.Fprintf(tw, "\t%s", f(r))
		}
		fmt.Fprintln(tw)
	}
	row("child's own start, no supervisor, p50", func(result) string { return ms(percentile(baseline, 0.5)) })
	row(fmt.Sprintf("crash -> replacement running, p50 (%d rounds)", rounds), func(r result) string { return ms(percentile(r.restarts, 0.5)) })
	row("crash -> replacement running, p90", func(r result) string { return ms(percentile(r.restarts, 0.9)) })
	row("crash -> replacement running, max", func(r result) string { return ms(slices.Max(r.restarts)) })
	row(fmt.Sprintf("SIGTERM -> exit, 3 programs, p50 (%d runs)", shutdowns), func(r result) string { return ms(percentile(r.shutdowns, 0.5)) })
	row("SIGTERM -> exit, 3 programs, max", func(r result) string { return ms(slices.Max(r.shutdowns)) })
	mb := func(kb int) string { return fmt.Sprintf("%.1f MB", float64(kb)/1024) }
	row(fmt.Sprintf("anonymous memory (heap, stacks), 3 programs, after the %d restarts", rounds), func(r result) string { return mb(r.mem.Anonymous) })
	row("PSS (shared pages counted by their share)", func(r result) string { return mb(r.mem.PSS) })
	row("RSS", func(r result) string { return mb(r.mem.RSS) })
	row("  of which clean file-backed (reclaimable)", func(r result) string { return mb(r.mem.File()) })
	tw.Flush()
}

func cpuModel() string {
	data, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "model name"); ok {
			return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(rest), ":"))
		}
	}
	return "unknown CPU"
}

func kernel() string {
	data, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return strings.TrimSpace(string(data))
}
