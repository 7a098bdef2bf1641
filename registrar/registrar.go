package registrar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/lbctl/lbctl/internal/backoff"
)

// Registrar keeps one Service registered with the local Consul agent.
type Registrar struct {
	client *api.Client
	svc    Service
	log    *slog.Logger

	// RegisterBackoff spaces registration attempts (agent down at start).
	RegisterBackoff *backoff.Backoff
	// WatchBackoff spaces re-checks while the agent does not answer; its Max
	// bounds how late a lost registration is noticed once the agent is back.
	WatchBackoff *backoff.Backoff
	// WatchWait is how long one blocking query on the agent's copy may hang.
	WatchWait time.Duration
	// Healthy, when set, decides what each ttl heartbeat reports: pass when it
	// returns nil, fail with its error otherwise. Nil always passes.
	Healthy func(context.Context) error

	registeredOnce sync.Once
	registered     chan struct{}

	// mu serializes registering and deregistering: once Deregister has
	// run, Run registers no more. Without it, a Run whose ctx had not ended
	// yet saw the deregistration as a registration the agent lost and made
	// it again, leaving a stopped load balancer registered.
	mu           sync.Mutex
	deregistered bool
}

func (r *Registrar) isDeregistered() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.deregistered
}

// errDeregistered is registerOnce after Deregister.
var errDeregistered = errors.New("deregistered: not registering again")

// New keeps svc (already Completed) registered through client.
func New(client *api.Client, svc Service, log *slog.Logger) *Registrar {
	return &Registrar{
		client: client, svc: svc,
		log:             log.With("component", "registrar", "service", svc.Name, "id", svc.ID),
		RegisterBackoff: backoff.New(100*time.Millisecond, 10*time.Second),
		WatchBackoff:    backoff.New(50*time.Millisecond, time.Second),
		WatchWait:       time.Minute,
		registered:      make(chan struct{}),
	}
}

// Service is the instance this Registrar registers.
func (r *Registrar) Service() Service { return r.svc }

// Registered is closed once the agent has taken the registration the first time.
func (r *Registrar) Registered() <-chan struct{} { return r.registered }

// Run registers the service, retrying until the agent takes it, then keeps it
// registered until ctx ends: ttl checks get heartbeats, and a registration
// the agent loses is made again. It returns nil when ctx ends after the first
// registration, and an error naming the last failure when ctx ends before.
// Run never deregisters: draining and deregistering are the owner's calls.
func (r *Registrar) Run(ctx context.Context) error {
	if err := r.registerUntilDone(ctx); errors.Is(err, errDeregistered) {
		return nil
	} else if err != nil {
		return err
	}
	r.registeredOnce.Do(func() { close(r.registered) })
	beat := make(chan struct{}, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	if r.svc.Check.Type == "ttl" {
		wg.Go(func() { r.heartbeat(ctx, beat) })
	}
	for {
		if err := r.waitUntilLost(ctx); err != nil {
			return nil // ctx ended
		}
		if r.isDeregistered() {
			return nil
		}
		r.log.Warn("the Consul agent lost the registration; registering again")
		if err := r.registerUntilDone(ctx); err != nil {
			return nil // ctx ended
		}
		select {
		case beat <- struct{}{}:
		default:
		}
	}
}

// registerUntilDone registers, retrying with backoff until it works or ctx ends.
func (r *Registrar) registerUntilDone(ctx context.Context) error {
	defer r.RegisterBackoff.Reset()
	for attempt := 1; ; attempt++ {
		err := r.registerOnce(ctx)
		if errors.Is(err, errDeregistered) {
			return err
		}
		if err == nil {
			r.log.Info("registered", "address", r.svc.Address, "port", r.svc.Port,
				"tags", r.svc.Tags, "check", r.svc.Check.Type)
			return nil
		}
		r.log.Warn("registration failed; retrying", "attempt", attempt, "err", err)
		if werr := r.RegisterBackoff.Wait(ctx); werr != nil {
			return fmt.Errorf("register %s with the Consul agent: stopped (%v) after %d attempts: %w",
				r.svc.ID, werr, attempt, err)
		}
	}
}

func (r *Registrar) registerOnce(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.deregistered {
		return errDeregistered
	}
	opts := api.ServiceRegisterOpts{ReplaceExistingChecks: true}.WithContext(ctx)
	if err := r.client.Agent().ServiceRegisterOpts(r.svc.registration(), opts); err != nil {
		return err
	}
	if r.svc.Check.Type == "ttl" {
		r.sendHeartbeat(ctx) // a new ttl check starts critical: pass it now
	}
	return nil
}

// waitUntilLost blocks on the agent's copy of the registration (hash-based
// blocking query) and returns nil once the agent no longer has it, or ctx's
// error when ctx ends. While the agent does not answer it re-checks with
// WatchBackoff, so a restarted agent is noticed within WatchBackoff.Max.
func (r *Registrar) waitUntilLost(ctx context.Context) error {
	hash, failures := "", 0
	for {
		q := (&api.QueryOptions{WaitHash: hash, WaitTime: r.WatchWait}).WithContext(ctx)
		_, meta, err := r.client.Agent().Service(r.svc.ID, q)
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case isNotFound(err):
			return nil
		case err != nil:
			failures++
			r.logWatchFailure(failures, err)
			if werr := r.WatchBackoff.Wait(ctx); werr != nil {
				return werr
			}
		default:
			failures = 0
			r.WatchBackoff.Reset()
			hash = meta.LastContentHash
		}
	}
}

// logWatchFailure warns on the first failure in a row and every 20th
// (an agent restart is a short burst of them), and keeps the rest at debug.
func (r *Registrar) logWatchFailure(failures int, err error) {
	level := slog.LevelDebug
	if failures == 1 || failures%20 == 0 {
		level = slog.LevelWarn
	}
	r.log.Log(context.Background(), level, "checking the registration with the agent failed; checking again",
		"failures", failures, "err", err)
}

func isNotFound(err error) bool {
	var se api.StatusError
	return errors.As(err, &se) && se.Code == http.StatusNotFound
}

// heartbeat passes the ttl check every TTL/3, and at once on each signal on now.
func (r *Registrar) heartbeat(ctx context.Context, now <-chan struct{}) {
	t := time.NewTicker(max(r.svc.Check.TTL/3, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-now:
		}
		r.sendHeartbeat(ctx)
	}
}

func (r *Registrar) sendHeartbeat(ctx context.Context) {
	status, output := api.HealthPassing, "lbctl heartbeat"
	if r.Healthy != nil {
		if err := r.Healthy(ctx); err != nil {
			status, output = api.HealthCritical, err.Error()
		}
	}
	q := (&api.QueryOptions{}).WithContext(ctx)
	if err := r.client.Agent().UpdateTTLOpts(r.svc.CheckID(), output, status, q); err != nil && ctx.Err() == nil {
		r.log.Debug("ttl heartbeat failed", "err", err)
	}
}

// Deregister removes the instance from the agent (and so from Consul), and
// Run registers it no more. An instance the agent does not have is already
// deregistered: not an error.
func (r *Registrar) Deregister(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.deregistered = true
	if err := Deregister(ctx, r.client, r.svc.ID); err != nil && !isNotFound(err) {
		return err
	}
	return nil
}

// Deregister removes instance id from the agent client talks to; an unknown
// id is an error (a 404 api.StatusError).
func Deregister(ctx context.Context, client *api.Client, id string) error {
	if err := client.Agent().ServiceDeregisterOpts(id, (&api.QueryOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("deregister %s: %w", id, err)
	}
	return nil
}

// SetMaintenance puts instance id into maintenance (on) or takes it out.
// In maintenance the instance stays registered but is critical, so load
// balancers stop sending it calls.
func SetMaintenance(ctx context.Context, client *api.Client, id string, on bool, reason string) error {
	q := (&api.QueryOptions{}).WithContext(ctx)
	var err error
	if on {
		err = client.Agent().EnableServiceMaintenanceOpts(id, reason, q)
	} else {
		err = client.Agent().DisableServiceMaintenanceOpts(id, q)
	}
	if err != nil {
		return fmt.Errorf("set maintenance %v on %s: %w", on, id, err)
	}
	return nil
}
