// Package shift moves a service's traffic from one tag (blue) to another
// (green) in steps, gating each step on Consul health and on the error rate
// the load balancers observe, and rolling back by itself when a gate fails.
//
// The split lives in Consul KV at lbctl/shift/<service> as JSON; every lbctl
// run watches that prefix and renders the split as nginx upstream weights.
// One shift per service runs at a time, under a Consul session lock at
// lbctl/locks/shift/<service>. Everything read back from KV is untrusted and
// checked by Split.Validate before use.
package shift

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// KV layout.
const (
	// SplitPrefix holds one key per service: SplitPrefix + service.
	SplitPrefix = "lbctl/shift/"
	// LockPrefix holds the session lock of a running shift: LockPrefix + service.
	LockPrefix = "lbctl/locks/shift/"
)

// SplitKey is the KV key of service's split.
func SplitKey(service string) string { return SplitPrefix + service }

// LockKey is the KV key of the lock a shift of service holds.
func LockKey(service string) string { return LockPrefix + service }

// State is where a shift stands.
type State string

const (
	// Running: a shift process holds the lock and moves the split.
	Running State = "running"
	// Done: every step passed its gates; the split stays at the last step.
	Done State = "done"
	// RolledBack: a gate failed; all traffic went back to From.
	RolledBack State = "rolled_back"
	// Aborted: someone ran lbctl shift --abort; all traffic went back to From.
	Aborted State = "aborted"
	// Interrupted: the shift process stopped between steps (Ctrl-C); the
	// split stays at the last step written.
	Interrupted State = "interrupted"
)

var knownStates = map[State]bool{Running: true, Done: true, RolledBack: true, Aborted: true, Interrupted: true}

// Split is one service's traffic split as stored in KV.
type Split struct {
	Service string `json:"service"`
	From    string `json:"from"`
	To      string `json:"to"`
	// Weights is each tag's percentage of calls: {"blue": 90, "green": 10}.
	Weights map[string]int `json:"weights"`
	// Steps are the planned percentages for To; Step is how many of them
	// have been written (0: none yet).
	Steps     []int     `json:"steps,omitempty"`
	Step      int       `json:"step"`
	State     State     `json:"state"`
	Reason    string    `json:"reason,omitempty"`
	Holder    string    `json:"holder,omitempty"`
	UpdatedAt time.Time `json:"updated_at"`
}

// ToPercent is the share of calls that goes to To.
func (s Split) ToPercent() int { return s.Weights[s.To] }

// FromPercent is the share of calls that stays on From.
func (s Split) FromPercent() int { return s.Weights[s.From] }

// Active reports whether the split is still being moved by a shift process.
func (s Split) Active() bool { return s.State == Running }

// String is "blue 90% / green 10% (running, step 1/3)".
func (s Split) String() string {
	out := fmt.Sprintf("%s %d%% / %s %d%% (%s", s.From, s.FromPercent(), s.To, s.ToPercent(), s.State)
	if len(s.Steps) > 0 {
		out += fmt.Sprintf(", step %d/%d", s.Step, len(s.Steps))
	}
	return out + ")"
}

// safeTag is what a tag or service name must look like to reach nginx config
// (it is printed in comments) or a KV key.
var safeTag = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// ValidName reports whether s can be a service name or tag in a split.
func ValidName(s string) bool { return safeTag.MatchString(s) }

// ErrInvalidSplit is wrapped by every Validate error.
var ErrInvalidSplit = errors.New("invalid split")

// Validate checks a split read from KV: names, weights 0-100 summing to 100
// over exactly From and To, and a known state.
func (s Split) Validate() error {
	var problems []string
	if !ValidName(s.Service) {
		problems = append(problems, fmt.Sprintf("service %q is not a name", s.Service))
	}
	if !ValidName(s.From) || !ValidName(s.To) {
		problems = append(problems, fmt.Sprintf("tags %q and %q must be letters, digits, '.', '_', '-'", s.From, s.To))
	} else if s.From == s.To {
		problems = append(problems, fmt.Sprintf("from and to are both %q", s.From))
	}
	problems = append(problems, weightProblems(s)...)
	if !knownStates[s.State] {
		problems = append(problems, fmt.Sprintf("unknown state %q", s.State))
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalidSplit, strings.Join(problems, "; "))
	}
	return nil
}

func weightProblems(s Split) []string {
	var problems []string
	sum := 0
	for tag, w := range s.Weights {
		if tag != s.From && tag != s.To {
			problems = append(problems, fmt.Sprintf("weight for %q, which is neither from nor to", tag))
		}
		if w < 0 || w > 100 {
			problems = append(problems, fmt.Sprintf("weight %d for %q is not 0-100", w, tag))
		}
		sum += w
	}
	if sum != 100 {
		problems = append(problems, fmt.Sprintf("weights sum to %d, want 100", sum))
	}
	return problems
}

// At is the split with toPercent of calls on To and the rest on From.
func (s Split) At(toPercent int) Split {
	s.Weights = map[string]int{s.From: 100 - toPercent, s.To: toPercent}
	return s
}

// CheckSteps accepts strictly increasing percentages in 1-100.
func CheckSteps(steps []int) error {
	if len(steps) == 0 {
		return errors.New("no steps: give percentages for the new version, such as 10,50,100")
	}
	for i, p := range steps {
		if p < 1 || p > 100 {
			return fmt.Errorf("step %d is %d%%: each step must be 1-100", i+1, p)
		}
		if i > 0 && p <= steps[i-1] {
			return fmt.Errorf("steps must increase: %d%% follows %d%%", p, steps[i-1])
		}
	}
	return nil
}
