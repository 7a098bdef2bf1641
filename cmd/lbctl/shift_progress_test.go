package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lbctl/lbctl/internal/testrig"
	"github.com/lbctl/lbctl/shift"
)

func TestProgressRedrawsOnATerminalOnly(t *testing.T) {
	s := shift.Split{Service: "greeter", From: "blue", To: "green", Step: 1, State: shift.Running}.At(10)
	events := []shift.Event{
		{Kind: shift.StepStarted, Split: s},
		{Kind: shift.Checked, Split: s, Elapsed: time.Second, Interval: 2 * time.Second, Verdicts: []shift.Verdict{{Gate: "health", Pass: true, Detail: "1/1"}}},
		{Kind: shift.RollingBack, Split: s.At(0), Err: errors.New("gate error-rate failed")},
	}
	for _, terminal := range []bool{true, false} {
		var out bytes.Buffer
		p := &progress{w: &out, terminal: terminal, steps: 3}
		for _, e := range events {
			p.event(e)
		}
		p.finish()
		got := out.String()
		if strings.Contains(got, "\r") != terminal || strings.Contains(got, "[##########..........]") != terminal {
			t.Errorf("terminal=%v:\n%q", terminal, got)
		}
		if !strings.Contains(got, "step 1/3: blue 90% / green 10%\n") || !strings.Contains(got, "ROLLING BACK to blue 100% / green 0%: gate error-rate failed\n") {
			t.Errorf("terminal=%v: missing lines:\n%q", terminal, got)
		}
	}
}

// A line wider than the terminal wraps, and \r then redraws only its last
// row: every redraw would add lines. Each redraw fits the width it reads.
func TestProgressLineFitsTheTerminalWidth(t *testing.T) {
	s := shift.Split{Service: "greeter", From: "blue", To: "green", Step: 1, State: shift.Running}.At(10)
	checked := shift.Event{Kind: shift.Checked, Split: s, Elapsed: time.Second, Interval: 6 * time.Second, Verdicts: []shift.Verdict{
		{Gate: "health", Pass: true, Detail: "3/3 instances of green passing"}, {Gate: "error-rate", Pass: true, Detail: "0.00% of 1234 calls failed"}}}
	cols := 40
	var out bytes.Buffer
	p := &progress{w: &out, terminal: true, steps: 3, width: func() int { return cols }}
	p.event(checked)
	cols = 60 // SIGWINCH
	p.event(checked)
	p.finish()
	draws := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\r\033[K")[1:]
	if len(draws) != 2 {
		t.Fatalf("want 2 redraws, got %q", out.String())
	}
	for i, want := range []int{40, 60} {
		if n := len([]rune(draws[i])); n >= want || !strings.HasPrefix(draws[i], "step 1/3: blue 90% / green 10% [") || !strings.HasSuffix(draws[i], "…") {
			t.Errorf("redraw %d at %d columns: %d characters %q, want fewer than %d, cut with …", i, want, n, draws[i], want)
		}
	}
}

// watchWidth reads the terminal's width, and again on SIGWINCH.
func TestWatchWidthFollowsSIGWINCH(t *testing.T) {
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	defer ptmx.Close()
	fd := int(ptmx.Fd())
	setCols := func(cols uint16) {
		if err := unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &unix.Winsize{Row: 24, Col: cols}); err != nil {
			t.Fatal(err)
		}
	}
	setCols(120)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	width := watchWidth(ctx, fd)
	if got := width(); got != 120 {
		t.Fatalf("width %d, want 120", got)
	}
	setCols(80) // not our controlling terminal: send the SIGWINCH ourselves
	if err := syscall.Kill(os.Getpid(), syscall.SIGWINCH); err != nil {
		t.Fatal(err)
	}
	testrig.WaitFor(t, 5*time.Second, "the width after SIGWINCH", func() error {
		if got := width(); got != 80 {
			return fmt.Errorf("width %d, want 80", got)
		}
		return nil
	})
}
