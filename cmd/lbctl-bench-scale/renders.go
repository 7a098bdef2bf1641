package main

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// renders watches consul-template's output file and keeps which instances
// each version of it lists. consul-template writes a temporary file and
// renames it over the output, and only when the content changed, so each
// IN_MOVED_TO naming the file, on an inotify watch of its directory, is a
// render: the file is read once for it.
type renders struct {
	path     string
	n        int      // services
	inotify  *os.File // non-blocking: Close ends a pending Read
	changed  chan struct{}
	mu       sync.Mutex
	versions []version
}

// version is one content of the file: when its rename was seen, and for
// each instance (port - firstPort) whether a server line lists it.
type version struct {
	at time.Time
	up []bool
}

func watchRenders(b testing.TB, path string, n int) *renders {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		b.Fatal("inotify: ", err)
	}
	if _, err := unix.InotifyAddWatch(fd, filepath.Dir(path), unix.IN_MOVED_TO|unix.IN_CLOSE_WRITE); err != nil {
		unix.Close(fd)
		b.Fatal("inotify: ", err)
	}
	r := &renders{path: path, n: n, inotify: os.NewFile(uintptr(fd), "inotify"), changed: make(chan struct{}, 1)}
	go r.read()
	return r
}

// read records a version for each batch of events naming the file, until close.
func (r *renders) read() {
	buf := make([]byte, 64<<10)
	for {
		k, err := r.inotify.Read(buf)
		if err != nil {
			return
		}
		at := time.Now()
		if namesFile(buf[:k], filepath.Base(r.path)) {
			r.record(at)
		}
	}
}

// namesFile says whether any of the inotify events names the file name.
func namesFile(events []byte, name string) bool {
	for len(events) >= unix.SizeofInotifyEvent {
		end := unix.SizeofInotifyEvent + int(binary.NativeEndian.Uint32(events[12:16])) // the event's name length
		if end > len(events) {
			return false
		}
		if strings.TrimRight(string(events[unix.SizeofInotifyEvent:end]), "\x00") == name {
			return true
		}
		events = events[end:]
	}
	return false
}

func (r *renders) record(at time.Time) {
	conf, err := os.ReadFile(r.path)
	if err != nil {
		return // renamed away already: the next event reads what replaced it
	}
	r.mu.Lock()
	r.versions = append(r.versions, version{at: at, up: listed(string(conf), r.n)})
	r.mu.Unlock()
	signal(r.changed)
}

// listed marks each instance a "server ADDR:PORT;" line of conf names.
func listed(conf string, n int) []bool {
	up := make([]bool, n*instances)
	for line := range strings.Lines(conf) {
		addr, ok := strings.CutPrefix(strings.TrimSpace(line), "server ")
		if !ok {
			continue
		}
		port, err := strconv.Atoi(strings.TrimSuffix(addr[strings.LastIndexByte(addr, ':')+1:], ";"))
		if i := port - firstPort; err == nil && i >= 0 && i < len(up) {
			up[i] = true
		}
	}
	return up
}

func (r *renders) soFar() []version {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.versions)
}

// any says whether the file was rendered at all.
func (r *renders) any() bool { return len(r.soFar()) > 0 }

// first is when it was first rendered.
func (r *renders) first() time.Time { return r.soFar()[0].at }

// waitRendered waits until every change is rendered, abort is closed or seenTimeout passes.
func (r *renders) waitRendered(changes []change, abort <-chan struct{}) []outcome {
	return waitSeen(r.changed, abort, seenTimeout, func() []outcome { return matchRendered(changes, r.soFar()) })
}

// matchRendered pairs each change with the first version, seen after the
// write began, that lists the instance as the change left it.
func matchRendered(changes []change, versions []version) []outcome {
	outs := make([]outcome, len(changes))
	for i, chg := range changes {
		for _, v := range versions {
			if !v.at.Before(chg.before) && v.up[chg.port-firstPort] != chg.down {
				outs[i].rendered = v.at
				break
			}
		}
	}
	return outs
}

func (r *renders) close() { r.inotify.Close() }
