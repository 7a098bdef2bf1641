// Package trafficsplit is the traffic split of one service between two
// tags, as package shift stores it in Consul KV and package render turns it
// into nginx upstream weights. It is a leaf: the renderer reads splits
// without pulling in the shift state machine.
//
// (Not named split: render and shift use split for variables throughout.)
package trafficsplit

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
)

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
