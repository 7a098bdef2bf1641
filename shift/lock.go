package shift

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/user"
	"time"

	"github.com/hashicorp/consul/api"
)

// Holder is who runs a shift, stored as the lock's value.
type Holder struct {
	User  string    `json:"user"`
	Host  string    `json:"host"`
	PID   int       `json:"pid"`
	From  string    `json:"from"`
	To    string    `json:"to"`
	Steps []int     `json:"steps"`
	Since time.Time `json:"since"`
}

// Me is the holder for this process shifting plan.
func Me(p Plan, now time.Time) Holder {
	h := Holder{PID: os.Getpid(), From: p.From, To: p.To, Steps: p.Steps, Since: now.UTC()}
	if u, err := user.Current(); err == nil {
		h.User = u.Username
	}
	h.Host, _ = os.Hostname()
	return h
}

func (h Holder) String() string {
	return fmt.Sprintf("%s@%s (pid %d), shifting %s to %s %v since %s",
		h.User, h.Host, h.PID, h.From, h.To, h.Steps, h.Since.Format(time.RFC3339))
}

// ErrHeld is wrapped by HeldError.
var ErrHeld = errors.New("a shift is already running")

// HeldError says who holds the lock a shift needs.
type HeldError struct {
	Service string
	Holder  Holder
}

func (e *HeldError) Error() string {
	return fmt.Sprintf("%s: %v: held by %s (lock %s)", e.Service, ErrHeld, e.Holder, LockKey(e.Service))
}
func (e *HeldError) Is(target error) bool { return target == ErrHeld }

// Lock is the Consul session lock one shift holds for its service.
type Lock struct {
	lock *api.Lock
	lost <-chan struct{}
}

// lockSessionTTL is how long a crashed shift keeps its lock; Consul's floor is 10s.
const lockSessionTTL = "10s"

// Acquire takes service's shift lock for holder, or returns a *HeldError
// naming who has it. It does not wait for the lock to be free.
func Acquire(ctx context.Context, client *api.Client, service string, holder Holder) (*Lock, error) {
	value, err := json.Marshal(holder)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", service, err)
	}
	l, err := client.LockOpts(&api.LockOptions{
		Key: LockKey(service), Value: value, SessionName: "lbctl shift " + service,
		SessionTTL: lockSessionTTL, LockTryOnce: true, LockWaitTime: 500 * time.Millisecond, LockDelay: time.Second,
	})
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", service, err)
	}
	lost, err := l.Lock(ctx.Done())
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", service, err)
	}
	if lost == nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("lock %s: %w", service, ctx.Err())
		}
		return nil, heldError(ctx, client, service)
	}
	return &Lock{lock: l, lost: lost}, nil
}

// heldError reads who holds the lock.
func heldError(ctx context.Context, client *api.Client, service string) error {
	h, err := CurrentHolder(ctx, client, service)
	if err != nil {
		return err
	}
	if h == nil { // released between our try and this read
		return fmt.Errorf("%s: %w (it was released just now: try again)", service, ErrHeld)
	}
	return &HeldError{Service: service, Holder: *h}
}

// CurrentHolder is who holds service's shift lock; nil when nobody does.
func CurrentHolder(ctx context.Context, client *api.Client, service string) (*Holder, error) {
	pair, _, err := client.KV().Get(LockKey(service), (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("read lock of %s: %w", service, err)
	}
	if pair == nil || pair.Session == "" {
		return nil, nil
	}
	var h Holder
	if err := json.Unmarshal(pair.Value, &h); err != nil {
		h = Holder{User: "unknown (session " + pair.Session + ")"}
	}
	return &h, nil
}

// Lost is closed when the lock is lost (session expired, Consul gone).
func (l *Lock) Lost() <-chan struct{} { return l.lost }

// Release gives the lock back and ends its session.
func (l *Lock) Release() error {
	if err := l.lock.Unlock(); err != nil && !errors.Is(err, api.ErrLockNotHeld) {
		return fmt.Errorf("release shift lock: %w", err)
	}
	if err := l.lock.Destroy(); err != nil && !errors.Is(err, api.ErrLockInUse) {
		return fmt.Errorf("remove shift lock: %w", err)
	}
	return nil
}
