package reload

import (
	"context"
	"crypto/sha256"
	"errors"
	"sync"

	"github.com/lbctl/lbctl/render"
)

// prevalidator runs nginx -t on an update as soon as it arrives, in the
// background, so that by the time the coalescing wait is over the result is
// usually ready: the wait and the validation overlap instead of adding up.
// At most one validation runs at a time; an Apply whose files differ from
// the ones validated in the background validates them itself.
type prevalidator struct {
	v *validator

	mu  sync.Mutex
	cur *prevalidation
	wg  sync.WaitGroup
}

type prevalidation struct {
	key    [sha256.Size]byte
	done   chan struct{}
	err    error
	staged []staged // written and fsynced next to their destinations once valid
}

// Prevalidate runs nginx -t on files in the background, as Run does with
// each update as it arrives: an Apply of exactly these files then takes
// the verdict instead of validating them again. lbctl's first render in
// live mode uses it, because its file does not depend on Consul's answers:
// nginx -t (0.8 s with the Lua module at 1,000 services) and reading Consul
// overlap.
func (c *Controller) Prevalidate(ctx context.Context, files []render.File) {
	c.cleanup.Do(c.removeStaleTemps) // before anything is staged
	c.pre.start(ctx, render.Update{Files: files})
}

// start validates u's changed files in the background unless a validation
// is already running or nothing changed.
func (p *prevalidator) start(ctx context.Context, u render.Update) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cur != nil && !isDone(p.cur.done) {
		return
	}
	changed, _, err := changedFiles(u.Files)
	if err != nil || len(changed) == 0 {
		return
	}
	p.dropLocked()
	pv := &prevalidation{key: filesKey(changed), done: make(chan struct{})}
	p.cur = pv
	p.wg.Go(func() {
		defer close(pv.done)
		if pv.err = p.v.validate(ctx, changed); pv.err == nil {
			// Staging (write and fsync) now takes the fsync out of the reload's path.
			pv.staged, _ = stage(changed)
		}
	})
}

// dropLocked forgets the last background validation and removes what it
// staged and nobody took. p.mu is held; cur, if any, is done.
func (p *prevalidator) dropLocked() {
	if p.cur != nil {
		discard(p.cur.staged)
		p.cur.staged = nil // a take racing with this stages afresh
		p.cur = nil
	}
}

// take returns the background validation of exactly these files, if there
// was one that ran to a verdict, and hands over the files it staged (nil
// when it staged none); the caller commits or discards them.
func (p *prevalidator) take(ctx context.Context, changed []render.File) (err error, st []staged, ok bool) {
	p.mu.Lock()
	pv := p.cur
	p.mu.Unlock()
	if pv == nil || pv.key != filesKey(changed) {
		return nil, nil, false
	}
	select {
	case <-pv.done:
	case <-ctx.Done():
		return nil, nil, false
	}
	if pv.err != nil && !errors.Is(pv.err, ErrRejected) {
		return nil, nil, false // nginx -t did not run to a verdict: try again
	}
	p.mu.Lock()
	st, pv.staged = pv.staged, nil
	p.mu.Unlock()
	return pv.err, st, true
}

// stop waits for a background validation still running and removes what
// it staged.
func (p *prevalidator) stop() {
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dropLocked()
}

func filesKey(files []render.File) [sha256.Size]byte {
	h := sha256.New()
	for _, f := range files {
		h.Write([]byte(f.Path))
		h.Write([]byte{0})
		h.Write(f.Data)
		h.Write([]byte{0})
	}
	var k [sha256.Size]byte
	h.Sum(k[:0])
	return k
}

func isDone(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
