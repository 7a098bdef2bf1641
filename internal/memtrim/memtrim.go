// Package memtrim hands back to the kernel the memory lbctl only needed to
// start.
//
// A Go binary's start-up runs the init code of every package it links and
// the kernel maps 64 KB around each page it faults in ("fault-around"), so by
// the time lbctl's main runs, nearly all of its 19 MB binary is mapped and
// counted in its RSS, although the steady state touches a few MB of it.
// Release unmaps the binary's read-only pages (code, read-only data, the
// function table) with MADV_DONTNEED: the next access faults the page back in
// from the page cache, and pages nobody touches become ordinary unmapped
// cache, which the kernel reclaims first (mapped executable pages it protects).
// It also returns the heap start-up freed (debug.FreeOSMemory).
package memtrim

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
)

// madvDontneed is MADV_DONTNEED from <sys/mman.h>.
const madvDontneed = 4

// Released is the process's resident memory, in bytes, around a Release.
type Released struct {
	Before, After int64
}

// Release returns freed heap to the kernel and unmaps the read-only pages of
// the running executable. Writable mappings are never touched: discarding
// them would lose their contents.
func Release() (Released, error) {
	var r Released
	r.Before = resident()
	debug.FreeOSMemory()
	regions, err := executableRegions()
	if err != nil {
		return r, err
	}
	for _, reg := range regions {
		if _, _, errno := syscall.Syscall(syscall.SYS_MADVISE, reg.start, reg.end-reg.start, madvDontneed); errno != 0 {
			return r, fmt.Errorf("madvise %#x-%#x: %w", reg.start, reg.end, errno)
		}
	}
	r.After = resident()
	return r, nil
}

// region is one mapping, [start, end).
type region struct{ start, end uintptr }

// executableRegions is every read-only mapping of the running executable.
func executableRegions() ([]region, error) {
	var st syscall.Stat_t
	if err := syscall.Stat("/proc/self/exe", &st); err != nil {
		return nil, fmt.Errorf("stat executable: %w", err)
	}
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readOnlyMappingsOf(f, st.Ino)
}

// readOnlyMappingsOf parses a /proc/PID/maps listing and returns the
// mappings of the file with inode ino that are neither writable nor shared.
func readOnlyMappingsOf(maps io.Reader, ino uint64) ([]region, error) {
	var out []region
	sc := bufio.NewScanner(maps)
	for sc.Scan() {
		// start-end perms offset dev inode path
		f := strings.Fields(sc.Text())
		if len(f) < 6 || f[4] != strconv.FormatUint(ino, 10) || f[1] != "r-xp" && f[1] != "r--p" {
			continue
		}
		startHex, endHex, ok := strings.Cut(f[0], "-")
		start, err1 := strconv.ParseUint(startHex, 16, 64)
		end, err2 := strconv.ParseUint(endHex, 16, 64)
		if !ok || err1 != nil || err2 != nil {
			return nil, fmt.Errorf("maps: bad range %q", f[0])
		}
		out = append(out, region{uintptr(start), uintptr(end)})
	}
	return out, sc.Err()
}

// resident is VmRSS in bytes, 0 when it cannot be read.
func resident() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}
