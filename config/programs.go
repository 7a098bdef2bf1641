package config

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Program is one process lbctl supervises. Keys and meanings follow
// supervisord's [program:x] section (see docs/supervisor.md).
type Program struct {
	// Name identifies the program in logs, status and lbctl ctl.
	Name string `yaml:"name"`
	// Command is the argv to run; no shell unless you write one.
	Command []string `yaml:"command"`
	// Environment is added to lbctl's own environment.
	Environment map[string]string `yaml:"environment"`
	// Directory is the working directory; empty keeps lbctl's.
	Directory string `yaml:"directory"`
	// User runs the program as this user (name or uid); lbctl must be root.
	User string `yaml:"user"`
	// Autostart starts the program when lbctl starts (default true).
	Autostart *bool `yaml:"autostart"`
	// Autorestart is true, false or unexpected (default): restart after an
	// exit from RUNNING always, never, or when the exit code is not in ExitCodes.
	Autorestart string `yaml:"autorestart"`
	// ExitCodes are the expected exit codes (default [0]).
	ExitCodes []int `yaml:"exitcodes"`
	// StartSecs is how long, in seconds, the program must stay up to count as
	// started (RUNNING); default 1. Fractions are allowed.
	StartSecs *float64 `yaml:"startsecs"`
	// StartRetries is how many failed starts in a row are retried before FATAL (default 3).
	StartRetries *int `yaml:"startretries"`
	// Backoff is the delay between failed starts: it starts at Min, doubles,
	// is capped at Max, with jitter.
	Backoff Backoff `yaml:"backoff"`
	// StopSignal asks the program to stop (default TERM; QUIT is nginx's graceful stop).
	StopSignal string `yaml:"stopsignal"`
	// StopWaitSecs is how long to wait after StopSignal before SIGKILL (default 10).
	StopWaitSecs *float64 `yaml:"stopwaitsecs"`
	// Essential makes lbctl stop everything and exit non-zero when the
	// program goes FATAL, or exits and is not going to be restarted.
	Essential bool `yaml:"essential"`
	// DependsOn names programs that must be RUNNING before this one starts.
	DependsOn []string `yaml:"depends_on"`
	// WaitForGates names readiness gates that must be open before this
	// program first starts ("first-render": nginx waits for a rendered, valid config).
	WaitForGates []string `yaml:"wait_for_gates"`
	// ForwardSignals are signals lbctl receives and passes on to this program.
	ForwardSignals []string `yaml:"forward_signals"`
	// LogFile, when set, also gets the program's output, rotated at
	// LogFileMaxBytes (default 50 MB, 0 never) keeping LogFileBackups old
	// files (default 10).
	LogFile         string `yaml:"logfile"`
	LogFileMaxBytes *int64 `yaml:"logfile_maxbytes"`
	LogFileBackups  *int   `yaml:"logfile_backups"`
}

// Backoff is the delay between failed start attempts.
type Backoff struct {
	Min time.Duration `yaml:"min"`
	Max time.Duration `yaml:"max"`
}

// Autorestart values.
const (
	AutorestartTrue       = "true"
	AutorestartFalse      = "false"
	AutorestartUnexpected = "unexpected"
)

// SetDefaults fills a program's unset fields. It is the one place program
// defaults are decided: programs built outside YAML (from a supervisord ini,
// in code, in tests) get them through it too, and supervisor.FromConfig
// calls it.
func (p *Program) SetDefaults() { p.setDefaults() }

func (p *Program) setDefaults() {
	if p.Autostart == nil {
		p.Autostart = ptr(true)
	}
	if p.Autorestart == "" {
		p.Autorestart = AutorestartUnexpected
	}
	if p.ExitCodes == nil {
		p.ExitCodes = []int{0}
	}
	if p.StartSecs == nil {
		p.StartSecs = ptr(1.0)
	}
	if p.StartRetries == nil {
		p.StartRetries = ptr(3)
	}
	if p.Backoff.Min == 0 {
		p.Backoff.Min = time.Second
	}
	if p.Backoff.Max == 0 {
		p.Backoff.Max = max(30*time.Second, p.Backoff.Min)
	}
	if p.StopSignal == "" {
		p.StopSignal = "TERM"
	}
	if p.StopWaitSecs == nil {
		p.StopWaitSecs = ptr(10.0)
	}
	if p.LogFileMaxBytes == nil {
		p.LogFileMaxBytes = ptr(int64(50 << 20))
	}
	if p.LogFileBackups == nil {
		p.LogFileBackups = ptr(10)
	}
}

// NginxStartSecs is the startsecs of the program that is nginx
// (nginx.program) when it sets none. A nginx master that cannot bind a
// listening socket tries 5 times, 500 ms apart, then exits with an error:
// staying up 3 s proves it bound everything, so a port it cannot have is a
// failed start (BACKOFF, then FATAL), never RUNNING.
const NginxStartSecs = 3.0

func ptr[T any](v T) *T { return &v }

// StartDuration is StartSecs as a duration.
func (p *Program) StartDuration() time.Duration { return secs(p.StartSecs) }

// StopWaitDuration is StopWaitSecs as a duration.
func (p *Program) StopWaitDuration() time.Duration { return secs(p.StopWaitSecs) }

// secs rounds to the nearest nanosecond, so that a duration written as
// seconds (d.Seconds()) reads back as d.
func secs(s *float64) time.Duration {
	if s == nil {
		return 0
	}
	return time.Duration(math.Round(*s * float64(time.Second)))
}

var programName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

func validatePrograms(programs []Program, report reporter) {
	index := map[string]int{}
	for i, p := range programs {
		at := func(key string) string { return fmt.Sprintf("programs[%d].%s", i, key) }
		if !programName.MatchString(p.Name) {
			report(at("name"), "want letters, digits, '.', '_', '-' (starting with a letter or digit), got %q", p.Name)
		} else if j, dup := index[p.Name]; dup {
			report(at("name"), "%q is already the name of programs[%d]", p.Name, j)
		} else {
			index[p.Name] = i
		}
		p.validate(at, report)
	}
	for i, p := range programs {
		for k, dep := range p.DependsOn {
			path := fmt.Sprintf("programs[%d].depends_on[%d]", i, k)
			if _, ok := index[dep]; !ok {
				report(path, "no program is named %q", dep)
			} else if dep == p.Name {
				report(path, "a program cannot depend on itself")
			}
		}
	}
	if cycle := DependencyCycle(programs); cycle != nil {
		report(fmt.Sprintf("programs[%d].depends_on", index[cycle[0]]), "dependency cycle: %s", strings.Join(cycle, " -> "))
	}
}

// validate checks one program's own fields; at turns a key into its path.
func (p *Program) validate(at func(string) string, report reporter) {
	if len(p.Command) == 0 || p.Command[0] == "" {
		report(at("command"), "required: the program's argv, such as [nginx, -g, \"daemon off;\"]")
	}
	switch p.Autorestart {
	case AutorestartTrue, AutorestartFalse, AutorestartUnexpected:
	default:
		report(at("autorestart"), "want true, false or unexpected, got %q", p.Autorestart)
	}
	for k, code := range p.ExitCodes {
		if code < 0 || code > 255 {
			report(fmt.Sprintf("%s[%d]", at("exitcodes"), k), "want an exit code 0-255, got %d", code)
		}
	}
	if p.StartSecs != nil && *p.StartSecs < 0 {
		report(at("startsecs"), "must not be negative")
	}
	if p.StartRetries != nil && *p.StartRetries < 0 {
		report(at("startretries"), "must not be negative")
	}
	if p.Backoff.Min < 0 || p.Backoff.Max < p.Backoff.Min {
		report(at("backoff"), "want 0 <= min <= max, got min %s max %s", p.Backoff.Min, p.Backoff.Max)
	}
	if _, err := ParseSignal(p.StopSignal); err != nil {
		report(at("stopsignal"), "%v", err)
	}
	if p.StopWaitSecs != nil && *p.StopWaitSecs <= 0 {
		report(at("stopwaitsecs"), "must be positive")
	}
	for k, name := range p.ForwardSignals {
		path := fmt.Sprintf("%s[%d]", at("forward_signals"), k)
		sig, err := ParseSignal(name)
		switch {
		case err != nil:
			report(path, "%v", err)
		case slices.Contains(unforwardable, sig):
			report(path, "%s cannot be forwarded: lbctl handles it itself", name)
		}
	}
	for k, gate := range p.WaitForGates {
		if !programName.MatchString(gate) {
			report(fmt.Sprintf("%s[%d]", at("wait_for_gates"), k), "want a gate name such as first-render, got %q", gate)
		}
	}
	if p.LogFileMaxBytes != nil && *p.LogFileMaxBytes < 0 {
		report(at("logfile_maxbytes"), "must not be negative")
	}
	if p.LogFileBackups != nil && *p.LogFileBackups < 0 {
		report(at("logfile_backups"), "must not be negative")
	}
}

// unforwardable are signals lbctl acts on itself (or cannot catch).
var unforwardable = []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGCHLD, syscall.SIGKILL, syscall.SIGSTOP}

// DependencyCycle returns the names along one depends_on cycle, first name
// repeated at the end, or nil when there is none.
func DependencyCycle(programs []Program) []string {
	deps := map[string][]string{}
	for _, p := range programs {
		deps[p.Name] = p.DependsOn
	}
	const (
		unvisited = iota
		visiting
		done
	)
	mark := map[string]int{}
	var stack []string
	var visit func(string) []string
	visit = func(n string) []string {
		switch mark[n] {
		case visiting:
			i := slices.Index(stack, n)
			return append(slices.Clone(stack[i:]), n)
		case done:
			return nil
		}
		mark[n] = visiting
		stack = append(stack, n)
		for _, d := range deps[n] {
			if _, known := deps[d]; !known || d == n {
				continue
			}
			if c := visit(d); c != nil {
				return c
			}
		}
		stack = stack[:len(stack)-1]
		mark[n] = done
		return nil
	}
	for _, p := range programs {
		if c := visit(p.Name); c != nil {
			return c
		}
	}
	return nil
}

// CheckPrograms fills defaults in and validates programs that did not come
// from lbctl.yaml (a supervisord ini file named source), reporting problems
// as "source: program:NAME.key: ...".
func CheckPrograms(source string, programs []Program) error {
	var errs []error
	for i := range programs {
		p := &programs[i]
		p.setDefaults()
		at := func(key string) string { return fmt.Sprintf("program:%s.%s", p.Name, key) }
		report := func(path, format string, args ...any) {
			errs = append(errs, &FieldError{File: source, Path: path, Msg: fmt.Sprintf(format, args...)})
		}
		if !programName.MatchString(p.Name) {
			report(at("name"), "want letters, digits, '.', '_', '-', got %q", p.Name)
		}
		p.validate(at, report)
	}
	return errors.Join(errs...)
}

// signalNames are the signals a config may name.
var signalNames = map[string]syscall.Signal{
	"HUP": syscall.SIGHUP, "INT": syscall.SIGINT, "QUIT": syscall.SIGQUIT, "KILL": syscall.SIGKILL,
	"USR1": syscall.SIGUSR1, "USR2": syscall.SIGUSR2, "TERM": syscall.SIGTERM, "ALRM": syscall.SIGALRM,
	"CHLD": syscall.SIGCHLD, "CONT": syscall.SIGCONT, "STOP": syscall.SIGSTOP, "TSTP": syscall.SIGTSTP,
	"WINCH": syscall.SIGWINCH, "ABRT": syscall.SIGABRT, "PWR": syscall.SIGPWR,
}

// ParseSignal reads a signal name as supervisord does: "TERM", "SIGTERM",
// any case, or a number.
func ParseSignal(name string) (syscall.Signal, error) {
	n := strings.TrimPrefix(strings.ToUpper(strings.TrimSpace(name)), "SIG")
	if sig, ok := signalNames[n]; ok {
		return sig, nil
	}
	if num, err := strconv.Atoi(n); err == nil && num > 0 && num < 65 {
		return syscall.Signal(num), nil
	}
	return 0, fmt.Errorf("unknown signal %q (want a name such as TERM, QUIT, USR1)", name)
}

// SignalName is the short name of sig ("TERM"), or its number.
func SignalName(sig syscall.Signal) string {
	for name, s := range signalNames {
		if s == sig {
			return name
		}
	}
	return strconv.Itoa(int(sig))
}
