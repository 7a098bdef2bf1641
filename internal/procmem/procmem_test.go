package procmem

import (
	"os"
	"testing"
)

func TestParseReadsRssPssAndAnonymous(t *testing.T) {
	rollup := `55d5a9c00000-7ffd3b9f5000 ---p 00000000 00:00 0                          [rollup]
Rss:               17532 kB
Pss:               15020 kB
Pss_Dirty:          6012 kB
Pss_Anon:           5980 kB
Pss_File:           9040 kB
Pss_Shmem:             0 kB
Shared_Clean:       2840 kB
Shared_Dirty:          0 kB
Private_Clean:      8680 kB
Private_Dirty:      6012 kB
Referenced:        17532 kB
Anonymous:          5980 kB
`
	u, err := parse(rollup)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Usage{RSS: 17532, PSS: 15020, Anonymous: 5980}); u != want {
		t.Fatalf("usage = %+v, want %+v", u, want)
	}
	if u.File() != 17532-5980 {
		t.Fatalf("File() = %d", u.File())
	}
}

func TestParseRefusesAListingWithoutTheFields(t *testing.T) {
	if _, err := parse("Rss: 10 kB\n"); err == nil {
		t.Fatal("a listing without Pss and Anonymous parsed")
	}
	if _, err := parse("Rss: x kB\nPss: 1 kB\nAnonymous: 1 kB\n"); err == nil {
		t.Fatal("a bad number parsed")
	}
}

// This process's own figures are read and add up: anonymous memory and PSS
// are parts of RSS.
func TestSelfReadsThisProcess(t *testing.T) {
	u, err := Self()
	if err != nil {
		t.Fatal(err)
	}
	if u.Anonymous <= 0 || u.PSS <= 0 || u.Anonymous > u.RSS || u.PSS > u.RSS {
		t.Fatalf("usage = %+v: want 0 < Anonymous, PSS <= RSS", u)
	}
	if _, err := Of(os.Getpid()); err != nil {
		t.Fatal(err)
	}
}
