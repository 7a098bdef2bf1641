// Package procmem reads what a process's memory really costs, from
// /proc/PID/smaps_rollup.
//
// RSS alone overstates it: it counts the clean file-backed pages a process
// has mapped (its executable's code and read-only data), which are page
// cache the kernel reclaims under pressure and shares between every process
// mapping the same file. What a process costs is its anonymous memory (heap,
// stacks, the data its writes made private), and PSS, which counts each
// shared page by its share.
package procmem

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Usage is a process's memory, in kB.
type Usage struct {
	// RSS is every resident page mapped, file-backed included.
	RSS int
	// PSS is RSS with each page divided by the number of processes mapping it.
	PSS int
	// Anonymous is the resident memory no file backs: heap, stacks, and
	// file pages the process wrote to. It is what the process costs.
	Anonymous int
}

// File is the resident file-backed part of RSS: clean pages, mostly the
// executable's, that the kernel can drop and read back.
func (u Usage) File() int { return u.RSS - u.Anonymous }

// Of reads the usage of process pid.
func Of(pid int) (Usage, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return Usage{}, err
	}
	return parse(string(b))
}

// Self is the calling process's usage.
func Self() (Usage, error) { return Of(os.Getpid()) }

// parse reads the fields Usage holds from an smaps_rollup listing.
func parse(rollup string) (Usage, error) {
	var u Usage
	fields := map[string]*int{"Rss:": &u.RSS, "Pss:": &u.PSS, "Anonymous:": &u.Anonymous}
	found := 0
	for line := range strings.Lines(rollup) {
		f := strings.Fields(line)
		if len(f) != 3 || f[2] != "kB" || fields[f[0]] == nil {
			continue
		}
		n, err := strconv.Atoi(f[1])
		if err != nil {
			return Usage{}, fmt.Errorf("smaps_rollup: %s %q: %w", f[0], f[1], err)
		}
		*fields[f[0]] = n
		found++
	}
	if found != len(fields) {
		return Usage{}, fmt.Errorf("smaps_rollup: want Rss, Pss and Anonymous, found %d of them", found)
	}
	return u, nil
}
