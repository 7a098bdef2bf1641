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
	key  [sha256.Size]byte
	done chan struct{}
	err  error
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
	pv := &prevalidation{key: filesKey(changed), done: make(chan struct{})}
	p.cur = pv
	p.wg.Go(func() {
		pv.err = p.v.validate(ctx, changed)
		close(pv.done)
	})
}

// result is the background validation of exactly these files, if there
// was one that ran to a verdict.
func (p *prevalidator) result(ctx context.Context, changed []render.File) (err error, ok bool) {
	p.mu.Lock()
	pv := p.cur
	p.mu.Unlock()
	if pv == nil || pv.key != filesKey(changed) {
		return nil, false
	}
	select {
	case <-pv.done:
	case <-ctx.Done():
		return nil, false
	}
	if pv.err != nil && !errors.Is(pv.err, ErrRejected) {
		return nil, false // nginx -t did not run to a verdict: try again
	}
	return pv.err, true
}

// wait waits for a background validation still running.
func (p *prevalidator) wait() { p.wg.Wait() }

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
