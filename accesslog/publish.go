package accesslog

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/lbctl/lbctl/internal/consulclient"
)

// StatsPrefix holds every load balancer's counts: StatsPrefix + lb + "/" + service.
const StatsPrefix = "lbctl/stats/"

// StatsKey is where lb publishes its counts for service.
func StatsKey(lb, service string) string { return StatsPrefix + lb + "/" + service }

// ValidLBID reports whether id can name a load balancer in a KV key.
func ValidLBID(id string) bool { return safeLabel.MatchString(id) }

// Publisher writes a Counter's changed stats to KV every Period. The keys
// are held by a session with the delete behaviour: when this load balancer
// stops or dies, its keys go, so readers only ever sum live load balancers.
type Publisher struct {
	Client  *api.Client
	LB      string
	Counter *Counter
	Period  time.Duration
	Log     *slog.Logger

	boot    string
	session string
}

// Run publishes until ctx ends, then removes this load balancer's keys.
func (p *Publisher) Run(ctx context.Context) error {
	if !ValidLBID(p.LB) {
		return fmt.Errorf("publish stats: load balancer id %q must be letters, digits, '.', '_', '-'", p.LB)
	}
	if p.Period <= 0 {
		p.Period = time.Second
	}
	p.boot = newBoot()
	log := p.Log.With("component", "accesslog", "lb", p.LB)
	tick := time.NewTicker(p.Period)
	defer tick.Stop()
	defer p.endSession()
	var pending []Stats
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		pending = mergePending(pending, p.Counter.TakeChanged())
		if len(pending) == 0 {
			continue
		}
		if err := p.publish(ctx, pending); err != nil {
			log.Warn("publishing call counts failed; retrying", "err", err)
			continue
		}
		pending = nil
	}
}

// mergePending keeps the newest stats per service.
func mergePending(pending, fresh []Stats) []Stats {
	for _, f := range fresh {
		replaced := false
		for i := range pending {
			if pending[i].Service == f.Service {
				pending[i], replaced = f, true
			}
		}
		if !replaced {
			pending = append(pending, f)
		}
	}
	return pending
}

func (p *Publisher) publish(ctx context.Context, stats []Stats) error {
	if err := p.ensureSession(ctx); err != nil {
		return err
	}
	for _, s := range stats {
		s.LB, s.Boot, s.UpdatedAt = p.LB, p.boot, time.Now().UTC()
		data, err := json.Marshal(s)
		if err != nil {
			return err
		}
		pair := &api.KVPair{Key: StatsKey(p.LB, s.Service), Value: data, Session: p.session}
		ok, _, err := p.Client.KV().Acquire(pair, (&api.WriteOptions{}).WithContext(ctx))
		if err != nil {
			return fmt.Errorf("write %s: %w", pair.Key, err)
		}
		if !ok {
			p.session = "" // our session is gone: make a new one next time
			return fmt.Errorf("write %s: the session no longer holds it", pair.Key)
		}
	}
	return nil
}

// ensureSession creates the session the keys hang on and keeps it renewed.
func (p *Publisher) ensureSession(ctx context.Context) error {
	if p.session != "" {
		return nil
	}
	const ttl = "15s"
	id, err := consulclient.CreateSession(ctx, p.Client, &api.SessionEntry{
		Name: "lbctl stats " + p.LB, TTL: ttl, Behavior: api.SessionBehaviorDelete, LockDelay: time.Millisecond,
	})
	if err != nil {
		return fmt.Errorf("create stats session: %w", err)
	}
	p.session = id
	go p.Client.Session().RenewPeriodic(ttl, id, nil, ctx.Done())
	return nil
}

func (p *Publisher) endSession() {
	if p.session == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	p.Client.Session().Destroy(p.session, (&api.WriteOptions{}).WithContext(ctx))
}

func newBoot() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// ReadStats returns every live load balancer's stats for service; a value
// that does not parse is skipped.
func ReadStats(ctx context.Context, client *api.Client, service string) ([]Stats, error) {
	pairs, _, err := client.KV().List(StatsPrefix, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("read call counts: %w", err)
	}
	var out []Stats
	for _, pair := range pairs {
		if !strings.HasSuffix(pair.Key, "/"+service) {
			continue
		}
		var s Stats
		if json.Unmarshal(pair.Value, &s) == nil && s.Service == service {
			out = append(out, s)
		}
	}
	return out, nil
}
