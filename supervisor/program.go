package supervisor

import (
	"fmt"
	"maps"
	"slices"
	"syscall"
	"time"

	"github.com/lbctl/lbctl/config"
)

// Program is what the supervisor needs to run one program, every field
// decided. Build it with FromConfig, which fills in config's defaults.
type Program struct {
	Name    string
	Command []string
	// Env is added to the supervisor's environment ("KEY=VALUE").
	Env  []string
	Dir  string
	User string
	// Autostart starts the program when the supervisor runs.
	Autostart   bool
	Autorestart Restart
	// ExitCodes are the expected exit codes for RestartUnexpected.
	ExitCodes []int
	// StartSecs: a process up this long is RUNNING; one that exits sooner failed to start.
	StartSecs time.Duration
	// StartRetries failed starts in a row are retried, the next is FATAL.
	StartRetries int
	// BackoffMin and BackoffMax bound the delay before retrying a failed start.
	BackoffMin, BackoffMax time.Duration
	StopSignal             syscall.Signal
	// StopWait after StopSignal, the process group is sent SIGKILL.
	StopWait time.Duration
	// Essential: when it goes FATAL, or EXITED with no restart to come, Run
	// stops everything and returns an *EssentialError.
	Essential bool
	// DependsOn programs must be RUNNING before this one starts.
	DependsOn []string
	// Gates must be open (OpenGate) before this program starts.
	Gates []string
	// ForwardSignals are passed on by Forward.
	ForwardSignals []syscall.Signal
	// LogFile also receives the program's output, rotated at LogMaxBytes with LogBackups old files.
	LogFile     string
	LogMaxBytes int64
	LogBackups  int
}

// Restart is the autorestart policy.
type Restart int

const (
	RestartUnexpected Restart = iota // restart when the exit code is not in ExitCodes
	RestartAlways
	RestartNever
)

func (r Restart) String() string {
	switch r {
	case RestartAlways:
		return "true"
	case RestartNever:
		return "false"
	}
	return "unexpected"
}

// FromConfig turns a validated config.Program into a Program. Unset fields
// get config's defaults (config.Program.SetDefaults, the one place program
// defaults are decided); programs built in code go through here too.
func FromConfig(c config.Program) (Program, error) {
	c.SetDefaults()
	p := Program{
		Name:         c.Name,
		Command:      slices.Clone(c.Command),
		Dir:          c.Directory,
		User:         c.User,
		Autostart:    *c.Autostart,
		ExitCodes:    slices.Clone(c.ExitCodes),
		StartSecs:    c.StartDuration(),
		StartRetries: *c.StartRetries,
		BackoffMin:   c.Backoff.Min,
		BackoffMax:   c.Backoff.Max,
		StopWait:     c.StopWaitDuration(),
		Essential:    c.Essential,
		DependsOn:    slices.Clone(c.DependsOn),
		Gates:        slices.Clone(c.WaitForGates),
		LogFile:      c.LogFile,
		LogMaxBytes:  *c.LogFileMaxBytes,
		LogBackups:   *c.LogFileBackups,
	}
	for _, k := range slices.Sorted(maps.Keys(c.Environment)) {
		p.Env = append(p.Env, k+"="+c.Environment[k])
	}
	switch c.Autorestart {
	case config.AutorestartTrue:
		p.Autorestart = RestartAlways
	case config.AutorestartFalse:
		p.Autorestart = RestartNever
	case config.AutorestartUnexpected:
		p.Autorestart = RestartUnexpected
	default:
		return Program{}, fmt.Errorf("program %s: autorestart: want true, false or unexpected, got %q", c.Name, c.Autorestart)
	}
	var err error
	if p.StopSignal, err = config.ParseSignal(c.StopSignal); err != nil {
		return Program{}, fmt.Errorf("program %s: stopsignal: %w", c.Name, err)
	}
	for _, name := range c.ForwardSignals {
		sig, err := config.ParseSignal(name)
		if err != nil {
			return Program{}, fmt.Errorf("program %s: forward_signals: %w", c.Name, err)
		}
		p.ForwardSignals = append(p.ForwardSignals, sig)
	}
	return p, nil
}

// FromConfigs converts every program, in order.
func FromConfigs(cs []config.Program) ([]Program, error) {
	out := make([]Program, 0, len(cs))
	for _, c := range cs {
		p, err := FromConfig(c)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// restartsAfter says whether an exit with code (-1: killed by a signal)
// from RUNNING is followed by a restart.
func (p *Program) restartsAfter(code int) bool {
	switch p.Autorestart {
	case RestartAlways:
		return true
	case RestartNever:
		return false
	}
	return code < 0 || !slices.Contains(p.ExitCodes, code)
}

// equal says whether two specs would run the same way (SIGHUP keeps
// unchanged programs running).
func (p *Program) equal(q *Program) bool {
	return fmt.Sprintf("%#v", *p) == fmt.Sprintf("%#v", *q)
}

// State is a program's state, named and meant as in supervisord.
type State int

const (
	// Stopped: not running, not asked to run (or waiting for its dependencies and gates).
	Stopped State = iota
	// Starting: spawned, not yet up for StartSecs.
	Starting
	// Running: up for at least StartSecs.
	Running
	// Backoff: exited while Starting; will be retried after a delay.
	Backoff
	// Stopping: sent its stop signal, waiting for it to exit.
	Stopping
	// Exited: exited from Running and not restarted (expected exit, or autorestart false).
	Exited
	// Fatal: could not be started after StartRetries retries.
	Fatal
)

var stateNames = [...]string{"STOPPED", "STARTING", "RUNNING", "BACKOFF", "STOPPING", "EXITED", "FATAL"}

func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// MarshalText writes the supervisord name.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText reads a supervisord state name.
func (s *State) UnmarshalText(b []byte) error {
	i := slices.Index(stateNames[:], string(b))
	if i < 0 {
		return fmt.Errorf("unknown state %q", b)
	}
	*s = State(i)
	return nil
}

// up says the program has a process (or is about to get one).
func (s State) up() bool { return s == Starting || s == Running || s == Stopping }

// Exit is how a process ended.
type Exit struct {
	// Code is the exit code, -1 when a signal killed it.
	Code int `json:"code"`
	// Signal is the signal that killed it ("" when it exited).
	Signal string `json:"signal,omitempty"`
	// Err is why it could not be started (the process never ran).
	Err string `json:"error,omitempty"`
	// Output is the last line the process wrote on stderr (on stdout if
	// none), cut at 240 bytes: usually why it failed.
	Output string    `json:"output,omitempty"`
	At     time.Time `json:"at"`
}

func (e Exit) String() string {
	switch {
	case e.Err != "":
		return "spawn error: " + e.Err
	case e.Signal != "":
		return "signal " + e.Signal
	case e.At.IsZero():
		return ""
	}
	return fmt.Sprintf("exit %d", e.Code)
}

// Status is a program's state as lbctl status shows it.
type Status struct {
	Name  string `json:"name"`
	State State  `json:"state"`
	PID   int    `json:"pid,omitempty"`
	// Since is when the current process started (zero when there is none).
	Since time.Time `json:"since,omitzero"`
	// Restarts counts starts after the first (automatic or asked for).
	Restarts int   `json:"restarts"`
	LastExit *Exit `json:"last_exit,omitempty"`
	// Waiting: asked to start, STOPPED until the dependencies and gates in Note are ready.
	Waiting bool `json:"waiting,omitempty"`
	// Note says what a program is waiting for, or why it is FATAL or BACKOFF.
	Note string `json:"note,omitempty"`
}

// Uptime is how long the current process has been up.
func (s Status) Uptime(now time.Time) time.Duration {
	if s.Since.IsZero() {
		return 0
	}
	return now.Sub(s.Since)
}
