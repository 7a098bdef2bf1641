package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/lbctl/lbctl/shift"
)

// progress shows a shift: on a terminal one line redrawn in place per step,
// otherwise one plain line per step, decision and outcome.
type progress struct {
	w        io.Writer
	terminal bool
	steps    int
	drawn    bool
	// width is the terminal's width in columns (0: unknown). The line drawn
	// in place is cut to fit: one that wraps cannot be redrawn with \r, and
	// every redraw would add lines.
	width func() int
}

func (p *progress) event(e shift.Event) {
	switch e.Kind {
	case shift.StepStarted:
		p.line(fmt.Sprintf("step %d/%d: %s", e.Split.Step, p.steps, weights(e.Split)))
	case shift.Checked:
		if p.terminal {
			p.redraw(fmt.Sprintf("step %d/%d: %s %s %s", e.Split.Step, p.steps, weights(e.Split), bar(e.Elapsed.Seconds(), e.Interval.Seconds()), verdicts(e.Verdicts)))
		}
	case shift.StepPassed:
		p.line(fmt.Sprintf("step %d/%d passed: %s  %s", e.Split.Step, p.steps, weights(e.Split), verdicts(e.Verdicts)))
	case shift.RollingBack:
		p.line(fmt.Sprintf("ROLLING BACK to %s: %v", weights(e.Split), e.Err))
	case shift.Stopped:
		p.line(fmt.Sprintf("stopped at %s (%s)", weights(e.Split), e.Split.State))
	case shift.Finished:
		p.line(fmt.Sprintf("all %d steps passed: %s", p.steps, weights(e.Split)))
	}
}

// line ends any line drawn in place and prints s on its own line.
func (p *progress) line(s string) {
	if p.drawn {
		fmt.Fprint(p.w, "\r\033[K")
		p.drawn = false
	}
	fmt.Fprintln(p.w, s)
}

func (p *progress) redraw(s string) {
	if p.width != nil {
		s = fit(s, p.width())
	}
	fmt.Fprint(p.w, "\r\033[K"+s)
	p.drawn = true
}

// fit cuts s to cols-1 characters (the last column would let some
// terminals wrap), ending in "…" when cut; cols <= 0 leaves s alone.
func fit(s string, cols int) string {
	r := []rune(s)
	if cols <= 0 || len(r) < cols {
		return s
	}
	if cols < 2 {
		return ""
	}
	return string(r[:cols-2]) + "…"
}

// watchWidth reads the width of the terminal fd is, and again on every
// SIGWINCH until ctx ends, as docker pull and pv do.
func watchWidth(ctx context.Context, fd int) func() int {
	var cols atomic.Int64
	read := func() {
		if ws, err := unix.IoctlGetWinsize(fd, unix.TIOCGWINSZ); err == nil {
			cols.Store(int64(ws.Col))
		}
	}
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	read()
	go func() {
		defer signal.Stop(winch)
		for {
			select {
			case <-ctx.Done():
				return
			case <-winch:
				read()
			}
		}
	}()
	return func() int { return int(cols.Load()) }
}

func (p *progress) finish() {
	if p.drawn {
		fmt.Fprintln(p.w)
		p.drawn = false
	}
}

func weights(s shift.Split) string {
	return fmt.Sprintf("%s %d%% / %s %d%%", s.From, s.FromPercent(), s.To, s.ToPercent())
}

func bar(done, total float64) string {
	const width = 20
	n := 0
	if total > 0 {
		n = min(width, int(width*done/total))
	}
	return "[" + strings.Repeat("#", n) + strings.Repeat(".", width-n) + "]"
}

func verdicts(vs []shift.Verdict) string {
	var parts []string
	for _, v := range vs {
		mark := "ok"
		if !v.Pass {
			mark = "FAIL"
		}
		parts = append(parts, fmt.Sprintf("%s %s: %s", v.Gate, mark, v.Detail))
	}
	return strings.Join(parts, "; ")
}
