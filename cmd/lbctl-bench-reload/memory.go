package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/lbctl/lbctl/internal/procmem"
)

// printMemory prints the memory of each nginx's master and current workers
// after the rounds, from /proc/PID/smaps_rollup, and lbctl's own (all three
// load balancers run in processes of their own).
func printMemory(w io.Writer, env *benchEnv) error {
	fmt.Fprintf(w, "\nmemory after the rounds, per process (smaps_rollup; anonymous = heap, stacks, written pages: what it costs):\n\n")
	fmt.Fprintf(w, "| %-54s | %9s | %9s | %9s |\n", "process", "anonymous", "PSS", "RSS")
	fmt.Fprintf(w, "|%s|%s|%s|%s|\n", dash(56), dash(11), dash(11), dash(11))
	for _, n := range []struct {
		name   string
		master int
	}{
		{"nginx, no Lua module (lbctl reload mode)", env.lbctl.master},
		{"nginx, no Lua module (consul-template)", env.ctNginx.PID()},
		{"nginx + Lua module (lbctl live mode)", env.live.master},
	} {
		master := n.master
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
	for _, p := range []struct {
		name string
		pid  int
	}{{"lbctl, reload mode (its process)", env.lbctl.pid}, {"lbctl, live mode (its process)", env.live.pid}, {"this bench (probes, greeter backends)", os.Getpid()}} {
		if err := memRow(w, p.name, p.pid); err != nil {
			return err
		}
	}
	fmt.Fprintln(w, "\nEach lbctl process is package lb's pipeline as lbctl run builds it, without the supervisor and the metrics server (cmd/lbctl-bench-memory measures lbctl run whole); the shared dict (nginx.live_memory) is a shared mapping counted only as far as it is touched.")
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
