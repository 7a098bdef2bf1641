package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/lbctl/lbctl/internal/procmem"
	"github.com/lbctl/lbctl/internal/testrig"
)

// printMemory prints the memory of each nginx's master and current workers
// after the rounds, from /proc/PID/smaps_rollup, and lbctl's own (all three
// load balancers run in this process, so it is their sum plus the bench).
func printMemory(w io.Writer, env *benchEnv) error {
	fmt.Fprintf(w, "\nmemory after the rounds, per process (smaps_rollup; anonymous = heap, stacks, written pages: what it costs):\n\n")
	fmt.Fprintf(w, "| %-54s | %9s | %9s | %9s |\n", "process", "anonymous", "PSS", "RSS")
	fmt.Fprintf(w, "|%s|%s|%s|%s|\n", dash(56), dash(11), dash(11), dash(11))
	for _, n := range []struct {
		name  string
		nginx *testrig.Nginx
	}{
		{"nginx, no Lua module (lbctl reload mode)", env.lbctl.nginx},
		{"nginx, no Lua module (consul-template)", env.ctNginx},
		{"nginx + Lua module (lbctl live mode)", env.live.nginx},
	} {
		master := n.nginx.PID()
		if err := memRow(w, n.name+": master", master); err != nil {
			return err
		}
		workers, err := workersOf(master)
		if err != nil {
			return err
		}
		for i, pid := range workers {
			if err := memRow(w, fmt.Sprintf("%s: worker %d", n.name, i+1), pid); err != nil {
				return err
			}
		}
	}
	if err := memRow(w, "this bench (3 lbctl pipelines, probes, rigs)", os.Getpid()); err != nil {
		return err
	}
	fmt.Fprintln(w, "\nlbctl run's own memory is measured by cmd/lbctl-bench-memory; the shared dict (nginx.live_memory) is a shared mapping counted only as far as it is touched.")
	return nil
}

func memRow(w io.Writer, name string, pid int) error {
	u, err := procmem.Of(pid)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	fmt.Fprintf(w, "| %-54s | %6.1f MB | %6.1f MB | %6.1f MB |\n", name, mb(u.Anonymous), mb(u.PSS), mb(u.RSS))
	return nil
}

func mb(kb int) float64 { return float64(kb) / 1024 }

// workersOf lists the current worker processes of an nginx master: its
// children titled "nginx: worker process" (not the old ones still shutting
// down, nor the cache helpers).
func workersOf(master int) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err1 := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		title, err2 := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err1 != nil || err2 != nil {
			continue // exited since ReadDir
		}
		// After the command's closing parenthesis: state, then ppid.
		rest := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(rest) > 1 && rest[1] == strconv.Itoa(master) && strings.TrimRight(string(title), "\x00 ") == "nginx: worker process" {
			out = append(out, pid)
		}
	}
	return out, nil
}
