package consultemplate

import (
	"errors"
	"log/slog"
	"testing"
	"time"
)

func TestBackoffGrowsToItsCapWithJitter(t *testing.T) {
	b := backoff{Base: 100 * time.Millisecond, Max: time.Second}
	for _, tc := range []struct {
		retries  int
		lo, hi   time.Duration // the wait is in [lo, hi)
		scenario string
	}{
		{0, 50 * time.Millisecond, 100 * time.Millisecond, "first retry: around Base"},
		{1, 100 * time.Millisecond, 200 * time.Millisecond, "doubles"},
		{3, 400 * time.Millisecond, 800 * time.Millisecond, "doubles again"},
		{4, 500 * time.Millisecond, time.Second, "capped at Max"},
		{1000, 500 * time.Millisecond, time.Second, "no overflow after many failures"},
	} {
		for _, r := range []float64{0, 0.5, 0.999999} {
			b.rand = func() float64 { return r }
			if d := b.delay(tc.retries); d < tc.lo || d >= tc.hi {
				t.Errorf("%s: delay(%d) with rand %v = %s, want in [%s, %s)", tc.scenario, tc.retries, r, d, tc.lo, tc.hi)
			}
		}
	}
	retry, d := b.retryForever()(50)
	if !retry || d <= 0 {
		t.Errorf("retryForever gave up or waits %s", d)
	}
}

func TestSplitLevel(t *testing.T) {
	for line, want := range map[string]slog.Level{
		"[TRACE] (view) health.service(x) starting fetch":    levelTrace,
		"[DEBUG] (watcher) adding health.service(x)":         slog.LevelDebug,
		"[WARN] (clients) disabling consul SSL verification": slog.LevelDebug,
		"[ERR] (view) boom (exceeded maximum retries)":       slog.LevelWarn,
		"no prefix at all": slog.LevelInfo,
	} {
		level, msg := splitLevel([]byte(line))
		if level != want || len(msg) == 0 || msg[0] == '[' {
			t.Errorf("splitLevel(%q) = %v, %q; want level %v without the prefix", line, level, msg, want)
		}
	}
}

func TestRedactor(t *testing.T) {
	redact := redactor("tok-123")
	if got := redact(errors.New("GET /v1/x?token=tok-123 failed")).Error(); got != "GET /v1/x?token=<redacted> failed" {
		t.Errorf("got %q", got)
	}
	plain := errors.New("connection refused")
	if got := redact(plain); got != plain {
		t.Errorf("an error without the token must pass unchanged, got %v", got)
	}
	if redactor("")(plain) != plain || redact(nil) != nil {
		t.Error("no token or no error: nothing to do")
	}
}

func TestLocate(t *testing.T) {
	for in, want := range map[string]string{
		`template: :3: unexpected "}" in operand`:                           `lb.tpl:3: unexpected "}" in operand`,
		`template: :2:7: executing "" at <index .x 5>: error calling index`: `lb.tpl:2:7: at <index .x 5>: error calling index`,
		`something else entirely`:                                           `template lb.tpl: something else entirely`,
	} {
		if got := locate("lb.tpl", errors.New(in)).Error(); got != want {
			t.Errorf("locate(%q) = %q, want %q", in, got, want)
		}
	}
}
