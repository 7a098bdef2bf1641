package supervisor

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lbctl/lbctl/config"
)

func TestBackoffDelayGrowsToCapWithJitter(t *testing.T) {
	minD, maxD := 100*time.Millisecond, time.Second
	cases := []struct {
		failures int
		rnd      float64
		want     time.Duration
	}{
		{0, 0.5, 0},
		{1, 0, 50 * time.Millisecond}, // half of min, no jitter
		{1, 0.999999, 100 * time.Millisecond},
		{2, 0, 100 * time.Millisecond},   // 200ms nominal
		{3, 0.5, 300 * time.Millisecond}, // 400ms nominal: 200 + 0.5*200
		{5, 0, 500 * time.Millisecond},   // 1.6s nominal, capped at 1s
		{60, 0, 500 * time.Millisecond},  // no overflow
	}
	for _, c := range cases {
		got := backoffDelay(c.failures, minD, maxD, func() float64 { return c.rnd })
		if d := got - c.want; d < -time.Microsecond || d > time.Microsecond {
			t.Errorf("backoffDelay(%d, rnd %v) = %s, want %s", c.failures, c.rnd, got, c.want)
		}
	}
}

func TestRotatingFileKeepsBackups(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.log")
	f, err := openRotatingFile(path, 10, 2)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		f.writeLine([]byte(fmt.Sprintf("line%d\n", i))) // 6 bytes: one line per file
	}
	f.Close()
	for file, want := range map[string]string{path: "line4\n", path + ".1": "line3\n", path + ".2": "line2\n"} {
		if data, _ := os.ReadFile(file); string(data) != want {
			t.Errorf("%s = %q, want %q", filepath.Base(file), data, want)
		}
	}
	if _, err := os.Stat(path + ".3"); err == nil {
		t.Error("more backups than asked for")
	}
}

func TestSplitCommandLikeShlex(t *testing.T) {
	cases := map[string][]string{
		`nginx -g "daemon off;"`:     {"nginx", "-g", "daemon off;"},
		`sh -c 'echo "$HOME" \x'`:    {"sh", "-c", `echo "$HOME" \x`},
		`a\ b c`:                     {"a b", "c"},
		`  x   ""  y `:               {"x", "", "y"},
		`say "a \"quoted\" \n word"`: {"say", `a "quoted" \n word`},
	}
	for in, want := range cases {
		got, err := splitCommand(in)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("splitCommand(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{`"open`, `x\`, ``, `   `} {
		if _, err := splitCommand(bad); err == nil {
			t.Errorf("splitCommand(%q): no error", bad)
		}
	}
}

// sampleSupervisordINI is a supervisord.conf using most of what lbctl
// honours (and some it does not), logging into logDir.
func sampleSupervisordINI(logDir string) string {
	return `[supervisord]
nodaemon=true

[program:nginx]
command=nginx -g "daemon off;"
priority=10
stopsignal=QUIT
stopwaitsecs=5
autorestart=true
stdout_logfile=/dev/stdout
umask=022

[program:app]
command=/usr/bin/app --port 9000
directory=/srv
environment=A="x y",B=2
autostart=false
exitcodes=0,3
startsecs=0
startretries=5
priority=5
stdout_logfile=` + logDir + `/app.log
stdout_logfile_maxbytes=1MB
stdout_logfile_backups=3

[eventlistener:crashmail]
command=crashmail
`
}

// Malformed supervisord files (the first made the library panic).
const (
	crashingINI = "[program:x]\ncommand=run\nenvironment=A=\n"
	badINI      = "[program:x]\ncommand=run\nautorestart=sometimes\nstopsignal=NOPE\n"
)

func TestLoadSupervisordINI(t *testing.T) {
	dir := t.TempDir()
	ini := sampleSupervisordINI(dir)
	path := filepath.Join(dir, "supervisord.conf")
	if err := os.WriteFile(path, []byte(ini), 0o644); err != nil {
		t.Fatal(err)
	}
	programs, warnings, err := LoadSupervisordINI(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(programs) != 2 || programs[0].Name != "app" || programs[1].Name != "nginx" {
		t.Fatalf("programs = %+v, want app then nginx (priority order)", programs)
	}
	app, err := FromConfig(programs[0])
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(app.Command, []string{"/usr/bin/app", "--port", "9000"}) || app.Dir != "/srv" ||
		app.Autostart || !slices.Equal(app.ExitCodes, []int{0, 3}) || app.StartSecs != 0 || app.StartRetries != 5 ||
		!slices.Equal(app.Env, []string{"A=x y", "B=2"}) || app.LogFile != dir+"/app.log" || app.LogMaxBytes != 1<<20 || app.LogBackups != 3 {
		t.Errorf("app = %+v", app)
	}
	nginx, _ := FromConfig(programs[1])
	if !slices.Equal(nginx.Command, []string{"nginx", "-g", "daemon off;"}) || nginx.StopSignal.String() != "quit" ||
		nginx.StopWait != 5*time.Second || nginx.Autorestart != RestartAlways || nginx.LogFile != "" || nginx.StartSecs != time.Second {
		t.Errorf("nginx = %+v", nginx)
	}
	joined := strings.Join(warnings, "\n")
	if !strings.Contains(joined, "[program:nginx]: umask is not supported") || !strings.Contains(joined, "eventlistener:crashmail") {
		t.Errorf("warnings = %q", warnings)
	}
}

func TestLoadSupervisordINIErrors(t *testing.T) {
	if _, _, err := LoadSupervisordINI(filepath.Join(t.TempDir(), "missing.conf")); err == nil {
		t.Error("missing file: no error")
	}
	crash := filepath.Join(t.TempDir(), "crash.conf")
	os.WriteFile(crash, []byte(crashingINI), 0o644)
	if _, _, err := LoadSupervisordINI(crash); err == nil {
		t.Error("environment=A=: no error")
	}
	path := filepath.Join(t.TempDir(), "bad.conf")
	os.WriteFile(path, []byte(badINI), 0o644)
	_, _, err := LoadSupervisordINI(path)
	if err == nil || !strings.Contains(err.Error(), "program:x.autorestart") || !strings.Contains(err.Error(), "program:x.stopsignal") {
		t.Errorf("err = %v, want autorestart and stopsignal errors", err)
	}
}

// FuzzSplitCommand: any command line from a supervisord file either splits
// or is refused, never panics, and the words, quoted again, split back the same.
func FuzzSplitCommand(f *testing.F) {
	for _, seed := range []string{`nginx -g "daemon off;"`, `sh -c 'echo "$HOME" \x'`, `a\ b c`, `"open`, `x\`, ``, `say "a \"q\" \n"`} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, line string) {
		words, err := splitCommand(line)
		if err != nil {
			return
		}
		quoted := make([]string, len(words))
		for i, w := range words {
			quoted[i] = "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
		}
		again, err := splitCommand(strings.Join(quoted, " "))
		if err != nil || !slices.Equal(again, words) {
			t.Fatalf("split %q = %q; quoted back and split again = %q, %v", line, words, again, err)
		}
	})
}

// A program given only a name and a command gets config's defaults, the
// same values lbctl.yaml gives it.
func TestFromConfigFillsConfigDefaults(t *testing.T) {
	p, err := FromConfig(config.Program{Name: "app", Command: []string{"app"}})
	if err != nil {
		t.Fatal(err)
	}
	var c config.Program
	c.SetDefaults()
	if !p.Autostart || p.Autorestart != RestartUnexpected || !slices.Equal(p.ExitCodes, c.ExitCodes) ||
		p.StartSecs != c.StartDuration() || p.StartRetries != *c.StartRetries ||
		p.BackoffMin != c.Backoff.Min || p.BackoffMax != c.Backoff.Max || p.StopSignal != syscall.SIGTERM ||
		p.StopWait != c.StopWaitDuration() || p.LogMaxBytes != *c.LogFileMaxBytes || p.LogBackups != *c.LogFileBackups {
		t.Fatalf("FromConfig of a bare program = %+v, want config's defaults %+v", p, c)
	}
	if _, err := FromConfig(config.Program{Name: "app", Command: []string{"app"}, Autorestart: "sometimes"}); err == nil {
		t.Error("autorestart sometimes: no error")
	}
}
