package reload

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"syscall"
	"time"

	"github.com/lbctl/lbctl/live"
	"github.com/lbctl/lbctl/render"
)

// LivePusher pushes live upstreams to nginx and returns the versions nginx
// holds afterwards, read back (live.Client).
type LivePusher interface {
	Push(ctx context.Context, set live.Set, prune bool) (held map[string]string, err error)
}

// liveState is what the controller knows nginx holds; guarded by Controller.mu.
type liveState struct {
	held   live.Set // confirmed by the last full (pruning) push; nil: unknown
	master int      // the nginx master that confirmed it
	files  []render.File
	last   *render.Update // the newest update applied, for Resync
}

// applyLive pushes set to the running nginx and checks nginx holds every
// version. prune also drops the upstreams set does not list; without it
// (before a reload that adds upstreams) the old ones stay for the old
// workers. With no nginx running, set goes into the seed file the next one
// loads when it starts; otherwise Apply has it written after the update is
// reported applied, in the background (seedWriter): the seed only matters
// to an nginx that starts later, and a master restarted in between is
// pushed the current set again (Resync). In the path of every instance
// change, creating and renaming the file waited 2-170 ms on a busy disk's
// journal, against ~0.2 ms for the push (cmd/lbctl-bench-reload).
func (c *Controller) applyLive(ctx context.Context, set live.Set, prune bool) (Outcome, error) {
	outcome, err := c.pushSet(ctx, set, prune)
	if outcome == Written {
		err = c.seed.Now(set)
	}
	return outcome, err
}

// pushSet is applyLive's push: Written when no nginx runs (it loads the
// seed when it starts), Unchanged when the same master already confirmed set.
func (c *Controller) pushSet(ctx context.Context, set live.Set, prune bool) (Outcome, error) {
	master, err := c.opts.MasterPID()
	if errors.Is(err, ErrNoMaster) {
		c.live.held = nil
		return Written, nil
	}
	if err != nil {
		return Failed, fmt.Errorf("find nginx master: %w", err)
	}
	push, prunePush := set, prune
	if prune && master == c.live.master {
		if changed, noneGone := diffHeld(c.live.held, set); noneGone {
			if len(changed) == 0 {
				return Unchanged, nil
			}
			// The same nginx holds every other upstream at its version
			// already, and none to prune: at 1,000 upstreams the full set was
			// 10,000 peers to encode, send and decode for one instance change.
			push, prunePush = changed, false
		}
	}
	// lbctl may hold the push socket itself (package lb): with no nginx
	// accepting, a push waits in its queue; ConfirmTimeout bounds that too.
	pctx, cancel := context.WithTimeout(ctx, c.opts.ConfirmTimeout)
	defer cancel()
	held, err := c.pushWhenListening(pctx, push, prunePush)
	if err == nil {
		err = confirmHeld(push, held) // the rest, not pushed, the same master confirmed
	}
	if err != nil {
		// What nginx holds is not known now (a push may land after its
		// answer was lost): the next push is the whole set.
		c.live.held = nil
	}
	var rejected *live.RejectedError
	switch {
	case errors.Is(err, ErrNotConfirmed):
		return TimedOut, err
	case errors.As(err, &rejected):
		return Rejected, fmt.Errorf("nginx refused the live upstreams: %w", err)
	case err != nil:
		return Failed, fmt.Errorf("push live upstreams: %w", err)
	}
	if prune {
		c.live.held, c.live.master = set, master
	}
	return Applied, nil
}

// listenWait bounds the wait for an nginx that just started to bind its
// push socket (its master is known before it has read its config).
const listenWait = 2 * time.Second

// pushWhenListening pushes set, trying again every 10ms while nginx does
// not listen on its push socket yet, for up to listenWait.
func (c *Controller) pushWhenListening(ctx context.Context, set live.Set, prune bool) (map[string]string, error) {
	deadline := time.Now().Add(listenWait)
	for {
		held, err := c.opts.Live.Push(ctx, set, prune)
		if !notListening(err) || time.Now().After(deadline) {
			return held, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// notListening says whether err is a unix socket nobody listens on (yet).
func notListening(err error) bool {
	return errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED)
}

// confirmHeld checks that nginx read back every version pushed.
func confirmHeld(set live.Set, held map[string]string) error {
	for name, up := range set {
		if held[name] != up.Version {
			return fmt.Errorf("%w: nginx holds upstream %s at version %q, pushed %q", ErrNotConfirmed, name, held[name], up.Version)
		}
	}
	return nil
}

// diffHeld is the upstreams of next whose version held does not have, and
// whether every upstream held (nil: not known) is in next, so that pushing
// the changed ones leaves nginx holding next.
func diffHeld(held, next live.Set) (changed live.Set, noneGone bool) {
	changed, found := live.Set{}, 0
	for name, up := range next {
		h, ok := held[name]
		if ok {
			found++
		}
		if !ok || h.Version != up.Version {
			changed[name] = up
		}
	}
	return changed, held != nil && found == len(held)
}

// sameVersions says whether a and b hold the same upstreams at the same versions.
func sameVersions(a, b live.Set) bool {
	return a != nil && maps.EqualFunc(a, b, func(x, y live.Upstream) bool { return x.Version == y.Version })
}

// liveOnly says whether u changes nothing but live upstreams: its files are
// the ones last applied, so it needs no coalescing, validation or reload.
func (c *Controller) liveOnly(u render.Update) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return u.Live != nil && sameFiles(u.Files, c.live.files)
}

func sameFiles(a, b []render.File) bool {
	if len(a) != len(b) || b == nil {
		return false
	}
	for i := range a {
		if a[i].Path != b[i].Path || !bytes.Equal(a[i].Data, b[i].Data) {
			return false
		}
	}
	return true
}

// WaitSeed returns once the seed file holds the newest live upstreams
// applied (Apply writes it in the background). Run does it before it
// returns; a caller of Apply alone (lbctl render --once) does it before
// exiting.
func (c *Controller) WaitSeed() { c.seed.Wait() }

// Resync applies the newest update again, so that an nginx master that
// started since (after a crash: its shared memory is empty until it loaded
// the seed) is pushed the current live upstreams and confirms them. It does
// nothing in reload mode or before the first apply.
func (c *Controller) Resync(ctx context.Context) (Result, error) {
	c.mu.Lock()
	last := c.live.last
	c.mu.Unlock()
	if c.opts.Live == nil || last == nil {
		return Result{}, nil
	}
	u := *last
	u.Seen, u.Changes = time.Time{}, []string{"nginx master restarted: live upstreams pushed again"}
	return c.Apply(ctx, u)
}

// Validate runs nginx -t with files in place of the live ones, changing
// nothing; the error is a *ValidationError when nginx rejects them.
func (c *Controller) Validate(ctx context.Context, files []render.File) error {
	return c.validate.validate(ctx, files)
}
