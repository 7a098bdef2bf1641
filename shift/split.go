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

	"github.com/lbctl/lbctl/internal/trafficsplit"
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

// The split and its states are defined in package trafficsplit, so that
// the renderer can read splits without importing this package.
type (
	// Split is one service's traffic split as stored in KV.
	Split = trafficsplit.Split
	// State is where a shift stands.
	State = trafficsplit.State
)

// States of a split; see trafficsplit.
const (
	Running     = trafficsplit.Running
	Done        = trafficsplit.Done
	RolledBack  = trafficsplit.RolledBack
	Aborted     = trafficsplit.Aborted
	Interrupted = trafficsplit.Interrupted
)

// ErrInvalidSplit is wrapped by every Split.Validate error.
var ErrInvalidSplit = trafficsplit.ErrInvalidSplit

// ValidName reports whether s can be a service name or tag in a split.
func ValidName(s string) bool { return trafficsplit.ValidName(s) }

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
