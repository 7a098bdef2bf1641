package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

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
