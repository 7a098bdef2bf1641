package lbstate

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/lbctl/lbctl/catalog"
	"github.com/lbctl/lbctl/internal/consulclient"
)

// Publisher is the load balancer's side: it keeps the key Prefix+ID holding
// the State last given to Publish, under a session that Run renews, so that
// the key disappears when the load balancer dies or stops.
//
// Publish after every Consul snapshot whose render is fully applied: the
// reload confirmed and the old nginx workers gone, or no reload needed
// because the bytes did not change. Run must be running for the key to live.
type Publisher struct {
	client *api.Client
	id     string
	log    *slog.Logger

	// Prefix is the KV prefix (Prefix by default).
	Prefix string
	// SessionTTL is how long the key outlives a load balancer that stopped
	// renewing (Consul may take up to twice this). At least 10s.
	SessionTTL time.Duration
	// RefreshEvery is how often Run renews the session and retries an
	// unpublished state (SessionTTL/3 at most).
	RefreshEvery time.Duration
	// WriteTimeout bounds one Publish, so a hung Consul cannot stall the
	// reload controller for long; Run retries what did not get through.
	WriteTimeout time.Duration
	// Now is time.Now; tests may fix it.
	Now func() time.Time

	mu        sync.Mutex // serializes writes so a newer state is never overwritten by an older one
	session   string
	want      *State // newest state given to Publish
	published bool   // want is in Consul

	// reach is whether Consul keeps our key: when a renew of the session or
	// a write of the state last succeeded, and the error of the newest
	// attempt when it failed. Its own lock, never held across a request,
	// so Reachable (/healthz) never waits for Consul.
	reach struct {
		sync.Mutex
		ok  time.Time
		err error
	}
}

// NewPublisher publishes as load balancer id (unique among load balancers;
// the hostname is a good choice).
func NewPublisher(client *api.Client, id string, log *slog.Logger) *Publisher {
	return &Publisher{
		client: client, id: id, log: log.With("component", "lbstate", "lb", id),
		Prefix: Prefix, SessionTTL: 10 * time.Second, RefreshEvery: 2 * time.Second,
		WriteTimeout: 5 * time.Second, Now: time.Now,
	}
}

// Key is the KV key this load balancer publishes under.
func (p *Publisher) Key() string { return p.Prefix + p.id }

// Publish records that the load balancer now serves, reload confirmed, the
// answer at indexes[q] of each watched health query q (render.Update.Indexes,
// catalog.Snapshot.Indexes). It writes at once; when that fails the error is
// returned and Run keeps retrying the newest state. It takes at most
// WriteTimeout.
func (p *Publisher) Publish(ctx context.Context, indexes map[catalog.Query]uint64) error {
	ctx, cancel := context.WithTimeout(ctx, p.WriteTimeout)
	defer cancel()
	st := State{ID: p.id, Queries: QueriesOf(indexes), ConfirmedAt: p.Now().UTC()}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.want, p.published = &st, false
	return p.record(p.writeLocked(ctx))
}

// Reachable is nil unless the load balancer has been unable to reach Consul
// for longer than its session TTL: no renew of its session and no write of
// its state has succeeded for that long, and the newest attempt failed. By
// then its session may have expired and its key be gone, so drains no longer
// wait for it and it must take no more calls (docs/drain.md, "A load balancer
// cut off from Consul"). It is nil again once a renew or a write succeeds.
// It never waits for Consul.
func (p *Publisher) Reachable() error {
	p.reach.Lock()
	defer p.reach.Unlock()
	if p.reach.err == nil {
		return nil
	}
	ttl := p.ttl()
	if since := p.Now().Sub(p.reach.ok); since > ttl {
		return fmt.Errorf("cannot reach Consul: no renew of the load balancer's session and no write of its state has succeeded for %s, longer than the session TTL %s, so drains no longer wait for this load balancer (last error: %v)",
			since.Round(100*time.Millisecond), ttl, p.reach.err)
	}
	return nil
}

// record notes the outcome of an attempt to keep the key (a renew or a
// write) for Reachable, and returns err.
func (p *Publisher) record(err error) error {
	now := p.Now()
	p.reach.Lock()
	defer p.reach.Unlock()
	switch {
	case err == nil:
		p.reach.ok, p.reach.err = now, nil
	case p.reach.ok.IsZero():
		// Never reached yet: unreachable since the first attempt.
		p.reach.ok, p.reach.err = now, err
	default:
		p.reach.err = err
	}
	return err
}

// ttl is the session's TTL as Consul is asked for it.
func (p *Publisher) ttl() time.Duration { return max(p.SessionTTL, 10*time.Second) }

// QueriesOf turns per-query indexes into the published form, sorted.
func QueriesOf(indexes map[catalog.Query]uint64) []QueryIndex {
	out := make([]QueryIndex, 0, len(indexes))
	for q, index := range indexes {
		out = append(out, QueryIndex{Service: q.Service, Tag: q.Tag, Datacenter: q.Datacenter, Index: index})
	}
	slices.SortFunc(out, func(a, b QueryIndex) int {
		return cmp.Or(cmp.Compare(a.Service, b.Service), cmp.Compare(a.Tag, b.Tag), cmp.Compare(a.Datacenter, b.Datacenter))
	})
	return out
}

// Run keeps the session alive and retries unpublished state until ctx ends,
// then destroys the session, which deletes the key: waiters stop counting
// this load balancer.
func (p *Publisher) Run(ctx context.Context) error {
	t := time.NewTicker(min(p.SessionTTL/3, p.RefreshEvery))
	defer t.Stop()
	defer p.destroySession()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := p.refresh(ctx); err != nil && ctx.Err() == nil {
			p.log.Warn("publishing load balancer state failed; retrying", "err", err)
		}
	}
}

// refresh renews the session, or writes the state again when it is not in
// Consul (first write failed, or the session was lost).
func (p *Publisher) refresh(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, p.WriteTimeout)
	defer cancel()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.want == nil {
		return nil
	}
	if p.published && p.session != "" {
		entry, _, err := p.client.Session().Renew(p.session, (&api.WriteOptions{}).WithContext(ctx))
		if err != nil {
			return p.record(fmt.Errorf("renew session: %w", err))
		}
		if entry != nil {
			return p.record(nil)
		}
		p.log.Warn("load balancer state session expired; publishing again")
		p.session, p.published = "", false
	}
	return p.record(p.writeLocked(ctx))
}

var errHeld = errors.New("key held by another session")

// writeLocked writes p.want under the session, making a session first when
// there is none. A key still held by an old session of this same load
// balancer (a previous process) is taken over.
func (p *Publisher) writeLocked(ctx context.Context) error {
	value, err := json.Marshal(p.want)
	if err != nil {
		return fmt.Errorf("encode load balancer state: %w", err)
	}
	var lastErr error
	for range 3 {
		if p.session == "" {
			if p.session, err = p.createSession(ctx); err != nil {
				return err
			}
		}
		lastErr = p.acquire(ctx, value)
		switch {
		case lastErr == nil:
			p.published = true
			return nil
		case errors.Is(lastErr, errHeld):
			p.destroyHolder(ctx)
		case p.sessionGone(ctx):
			p.session = "" // invalidated: start a new one
		default:
			// Consul could not take the write (no leader, a server gone):
			// keep the session, which may still hold the key. Starting a
			// new one would take the key over from it, deleting it until
			// the new write lands, and a drain in that gap would skip this
			// load balancer.
			return fmt.Errorf("publish %s: %w", p.Key(), lastErr)
		}
	}
	return fmt.Errorf("publish %s: %w", p.Key(), lastErr)
}

func (p *Publisher) acquire(ctx context.Context, value []byte) error {
	pair := &api.KVPair{Key: p.Key(), Value: value, Session: p.session}
	ok, _, err := p.client.KV().Acquire(pair, (&api.WriteOptions{}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("write %s: %w", p.Key(), err)
	}
	if !ok {
		return errHeld
	}
	return nil
}

func (p *Publisher) createSession(ctx context.Context) (string, error) {
	entry := &api.SessionEntry{
		Name:      "lbctl load balancer " + p.id,
		TTL:       p.ttl().String(),
		Behavior:  api.SessionBehaviorDelete,
		LockDelay: time.Millisecond, // a restarted load balancer may take its key back at once
	}
	id, err := consulclient.CreateSession(ctx, p.client, entry)
	if err != nil {
		return "", fmt.Errorf("create session: %w", err)
	}
	return id, nil
}

// sessionGone says whether Consul answers that our session no longer exists.
func (p *Publisher) sessionGone(ctx context.Context) bool {
	entry, _, err := p.client.Session().Info(p.session, (&api.QueryOptions{}).WithContext(ctx))
	return err == nil && entry == nil
}

// destroyHolder ends the session holding our key: it can only be a previous
// process of this load balancer, since IDs are unique.
func (p *Publisher) destroyHolder(ctx context.Context) {
	pair, _, err := p.client.KV().Get(p.Key(), (&api.QueryOptions{}).WithContext(ctx))
	if err != nil || pair == nil || pair.Session == "" || pair.Session == p.session {
		return
	}
	p.log.Info("taking over load balancer state from an older session")
	p.client.Session().Destroy(pair.Session, (&api.WriteOptions{}).WithContext(ctx))
}

// destroySession ends our session (deleting the key) with a short deadline of
// its own, since the caller's context has already ended.
func (p *Publisher) destroySession() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.session == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := p.client.Session().Destroy(p.session, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		p.log.Warn("removing load balancer state failed; it expires with its session", "err", err)
	}
	p.session, p.published = "", false
}
