package memtrim

import (
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestReadOnlyMappingsOfPicksTheExecutablesReadOnlyPages(t *testing.T) {
	maps := `00400000-00c87000 r-xp 00000000 fd:01 4242 /usr/bin/lbctl
00c87000-015fb000 r--p 00887000 fd:01 4242 /usr/bin/lbctl
015fc000-01671000 rw-p 011fc000 fd:01 4242 /usr/bin/lbctl
01671000-036b2000 rw-p 00000000 00:00 0
7f0000000000-7f0000021000 r-xp 00000000 fd:01 777 /usr/lib/libc.so.6
7f0000100000-7f0000200000 r--s 00000000 fd:01 4242 /usr/bin/lbctl
`
	got, err := readOnlyMappingsOf(strings.NewReader(maps), 4242)
	if err != nil {
		t.Fatal(err)
	}
	want := []region{{0x400000, 0xc87000}, {0xc87000, 0x15fb000}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("regions = %#v, want %#v", got, want)
	}
}

func TestReadOnlyMappingsOfRejectsABadRange(t *testing.T) {
	if _, err := readOnlyMappingsOf(strings.NewReader("zz-00c87000 r-xp 0 fd:01 1 /x\n"), 1); err == nil {
		t.Fatal("a bad range parsed")
	}
}

// TestReleaseUnmapsTheBinarysPages runs on this test binary: after Release
// the resident part of its read-only mappings has dropped, and code keeps
// running (every line after Release faults its pages back in).
func TestReleaseUnmapsTheBinarysPages(t *testing.T) {
	before := executableResidentKB(t)
	r, err := Release()
	if err != nil {
		t.Fatal(err)
	}
	after := executableResidentKB(t)
	t.Logf("executable's read-only pages %d kB -> %d kB; VmRSS %d kB -> %d kB", before, after, r.Before>>10, r.After>>10)
	if after > before*3/4 {
		t.Fatalf("executable's read-only pages %d kB -> %d kB: want at least a quarter of them unmapped", before, after)
	}
	if r.After >= r.Before {
		t.Fatalf("resident %d -> %d bytes: want less", r.Before, r.After)
	}
}

// executableResidentKB sums the Rss of the read-only mappings Release
// works on, from /proc/self/smaps.
func executableResidentKB(t *testing.T) int {
	t.Helper()
	regions, err := executableRegions()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	total, counting := 0, false
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if start, _, ok := strings.Cut(f[0], "-"); ok && len(f) >= 5 {
			addr, _ := strconv.ParseUint(start, 16, 64)
			counting = slices.ContainsFunc(regions, func(r region) bool { return uint64(r.start) == addr })
		} else if counting && f[0] == "Rss:" {
			n, _ := strconv.Atoi(f[1])
			total += n
		}
	}
	if total == 0 {
		t.Fatal("found no resident read-only pages of the executable")
	}
	return total
}
