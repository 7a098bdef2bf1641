package config

import (
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestProgramDefaults(t *testing.T) {
	cfg, err := Parse("lbctl.yaml", []byte("programs:\n  - name: app\n    command: [app]\n    autorestart: true\n"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	p := cfg.Programs[0]
	if !*p.Autostart || p.Autorestart != "true" || len(p.ExitCodes) != 1 || p.StartDuration() != time.Second ||
		*p.StartRetries != 3 || p.StopSignal != "TERM" || p.StopWaitDuration() != 10*time.Second || p.Backoff.Min != time.Second {
		t.Fatalf("defaults not filled: %+v", p)
	}
}

// The program that is nginx (nginx.program) must outlast nginx's 2.5 s of
// bind() retries before it counts as RUNNING, unless it says otherwise.
func TestNginxProgramStartSecsOutlastBindRetries(t *testing.T) {
	for src, want := range map[string][]time.Duration{
		"nginx: {program: lb}\nprograms:\n  - name: lb\n    command: [nginx]\n  - name: nginx\n    command: [x]\n": {3 * time.Second, time.Second},
		"programs:\n  - name: nginx\n    command: [nginx]\n    startsecs: 0.5\n":                                   {500 * time.Millisecond},
	} {
		cfg, err := Parse("lbctl.yaml", []byte(src), Options{})
		if err != nil {
			t.Fatal(err)
		}
		for i, w := range want {
			if got := cfg.Programs[i].StartDuration(); got != w {
				t.Errorf("%s: startsecs %s, want %s", cfg.Programs[i].Name, got, w)
			}
		}
	}
}

func TestProgramErrorsNameFileAndLine(t *testing.T) {
	src := `programs:
  - name: nginx
    command: [nginx]
    stopsignal: QUIT
  - name: app
    command: []
    autorestart: sometimes
    stopsignal: BOGUS
    startsecs: -1
    depends_on: [ghost]
    forward_signals: [TERM]
  - name: nginx
    command: [x]
`
	_, err := Parse("lbctl.yaml", []byte(src), Options{})
	if err == nil {
		t.Fatal("want errors")
	}
	for _, want := range []string{
		"lbctl.yaml:6: programs[1].command: required",
		"lbctl.yaml:7: programs[1].autorestart: want true, false or unexpected",
		`lbctl.yaml:8: programs[1].stopsignal: unknown signal "BOGUS"`,
		"lbctl.yaml:9: programs[1].startsecs: must not be negative",
		`lbctl.yaml:10: programs[1].depends_on[0]: no program is named "ghost"`,
		"lbctl.yaml:11: programs[1].forward_signals[0]: TERM cannot be forwarded",
		`lbctl.yaml:12: programs[2].name: "nginx" is already the name of programs[0]`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestProgramDependencyCycle(t *testing.T) {
	src := "programs:\n  - name: a\n    command: [a]\n    depends_on: [b]\n  - name: b\n    command: [b]\n    depends_on: [a]\n"
	_, err := Parse("lbctl.yaml", []byte(src), Options{})
	if err == nil || !strings.Contains(err.Error(), "dependency cycle: a -> b -> a") {
		t.Fatalf("err = %v, want a cycle", err)
	}
}

func TestProgramUnknownKey(t *testing.T) {
	_, err := Parse("lbctl.yaml", []byte("programs:\n  - name: a\n    command: [a]\n    stopsignl: QUIT\n"), Options{})
	if err == nil || !strings.Contains(err.Error(), `lbctl.yaml:4: unknown key "stopsignl" (in a program)`) {
		t.Fatalf("err = %v", err)
	}
}

func TestParseSignal(t *testing.T) {
	for in, want := range map[string]syscall.Signal{"TERM": syscall.SIGTERM, "sigquit": syscall.SIGQUIT, "Usr1": syscall.SIGUSR1, "9": syscall.SIGKILL} {
		if got, err := ParseSignal(in); err != nil || got != want {
			t.Errorf("ParseSignal(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := ParseSignal("NOPE"); err == nil {
		t.Error("NOPE parsed")
	}
}

func TestAutorestartTakesUnquotedBooleans(t *testing.T) {
	cfg, err := Parse("lbctl.yaml", []byte("programs:\n  - {name: a, command: [a], autorestart: true}\n  - {name: b, command: [b], autorestart: false}\n"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Programs[0].Autorestart != AutorestartTrue || cfg.Programs[1].Autorestart != AutorestartFalse {
		t.Errorf("autorestart = %q, %q", cfg.Programs[0].Autorestart, cfg.Programs[1].Autorestart)
	}
}

// A duration written as seconds reads back as itself (lbctl register's
// --stop-wait goes through StopWaitSecs).
func TestSecondsReadBackExactly(t *testing.T) {
	for _, d := range []time.Duration{0, 100 * time.Millisecond, 700 * time.Millisecond, 1700 * time.Millisecond, 10 * time.Second, 90*time.Minute + time.Nanosecond} {
		s := d.Seconds()
		p := Program{StopWaitSecs: &s}
		if got := p.StopWaitDuration(); got != d {
			t.Errorf("%s as seconds reads back as %s", d, got)
		}
	}
}
