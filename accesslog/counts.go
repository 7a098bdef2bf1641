package accesslog

import (
	"maps"
	"regexp"
	"slices"
	"sync"
	"time"

	"github.com/lbctl/lbctl/catalog"
)

// Counts is calls by outcome label ("0", "14", "upstream_error"...).
type Counts map[string]int64

// Total is every call counted.
func (c Counts) Total() int64 {
	var n int64
	for _, v := range c {
		n += v
	}
	return n
}

// Errors is the calls whose outcome IsError.
func (c Counts) Errors() int64 {
	var n int64
	for label, v := range c {
		if IsError(label) {
			n += v
		}
	}
	return n
}

// Minus is c - base, label by label; a label that went down (a restarted
// counter) counts from zero.
func (c Counts) Minus(base Counts) Counts {
	out := Counts{}
	for label, v := range c {
		if d := v - base[label]; d >= 0 {
			out[label] = d
		} else {
			out[label] = v
		}
	}
	return out
}

// Add adds o into c.
func (c Counts) Add(o Counts) {
	for label, v := range o {
		c[label] += v
	}
}

// Stats is one load balancer's counts for one service since it started,
// as published to KV. Counters only grow while Boot stays the same.
type Stats struct {
	LB        string    `json:"lb"`
	Service   string    `json:"service"`
	Boot      string    `json:"boot"`
	UpdatedAt time.Time `json:"updated_at"`
	// Tags counts calls by each tag of the instance that answered;
	// Versions by its meta "version".
	Tags     map[string]Counts `json:"tags"`
	Versions map[string]Counts `json:"versions"`
}

// owner is what an upstream address belongs to.
type owner struct {
	service, version string
	tags             []string
}

// Counter counts log records per service, tag and version. The address →
// instance directory comes from catalog snapshots (SetInstances).
type Counter struct {
	mu      sync.Mutex
	owners  map[string][]owner
	stats   map[string]*Stats
	changed map[string]bool
	unknown int64
}

// NewCounter starts with no instances known.
func NewCounter() *Counter {
	return &Counter{owners: map[string][]owner{}, stats: map[string]*Stats{}, changed: map[string]bool{}}
}

// Limits on untrusted values that become JSON keys in KV.
var safeLabel = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

const maxTagsPerInstance = 16

// SetInstances replaces the address directory with snap's instances. Only IP
// addresses are known: nginx logs IPs.
func (c *Counter) SetInstances(snap catalog.Snapshot) {
	owners := map[string][]owner{}
	for q, instances := range snap.Instances {
		for _, in := range instances {
			addr, ok := instanceAddr(in)
			if !ok {
				continue
			}
			o := ownerOf(q.Service, in)
			if !slices.ContainsFunc(owners[addr], func(x owner) bool { return x.service == o.service }) {
				owners[addr] = append(owners[addr], o)
			}
		}
	}
	c.mu.Lock()
	c.owners = owners
	c.mu.Unlock()
}

func instanceAddr(in catalog.Instance) (string, bool) {
	if in.Port < 1 || in.Port > 65535 {
		return "", false
	}
	return normalizeAddr(joinHostPort(in.Address, in.Port))
}

func ownerOf(service string, in catalog.Instance) owner {
	o := owner{service: service}
	if v := in.Meta["version"]; safeLabel.MatchString(v) {
		o.version = v
	}
	for _, t := range in.Tags {
		if safeLabel.MatchString(t) && len(o.tags) < maxTagsPerInstance {
			o.tags = append(o.tags, t)
		}
	}
	return o
}

// Add counts one record against every service owning its upstreams.
func (c *Counter) Add(r Record) {
	attempts := r.Attempts()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, a := range attempts {
		owners, ok := c.owners[a.Addr]
		if !ok {
			c.unknown++
			continue
		}
		for _, o := range owners {
			c.count(o, a.Label)
		}
	}
}

func (c *Counter) count(o owner, label string) {
	s := c.stats[o.service]
	if s == nil {
		s = &Stats{Service: o.service, Tags: map[string]Counts{}, Versions: map[string]Counts{}}
		c.stats[o.service] = s
	}
	for _, t := range o.tags {
		bump(s.Tags, t, label)
	}
	if o.version != "" {
		bump(s.Versions, o.version, label)
	}
	c.changed[o.service] = true
}

func bump(m map[string]Counts, key, label string) {
	if m[key] == nil {
		m[key] = Counts{}
	}
	m[key][label]++
}

// TakeChanged returns a copy of the stats of every service counted since the
// last call.
func (c *Counter) TakeChanged() []Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []Stats
	for _, svc := range slices.Sorted(maps.Keys(c.changed)) {
		out = append(out, cloneStats(*c.stats[svc]))
	}
	clear(c.changed)
	return out
}

// Unknown is how many attempts went to addresses no watched instance has.
func (c *Counter) Unknown() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.unknown
}

func cloneStats(s Stats) Stats {
	s.Tags, s.Versions = cloneCounts(s.Tags), cloneCounts(s.Versions)
	return s
}

func cloneCounts(m map[string]Counts) map[string]Counts {
	out := make(map[string]Counts, len(m))
	for k, v := range m {
		out[k] = maps.Clone(v)
	}
	return out
}
