package metrics

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// The # TYPE of each kind of collector.
const (
	kindCounter   = "counter"
	kindGauge     = "gauge"
	kindHistogram = "histogram"
)

// atomicFloat is a float64 kept as its bits, so it needs no lock.
type atomicFloat struct{ bits atomic.Uint64 }

func (f *atomicFloat) load() float64   { return math.Float64frombits(f.bits.Load()) }
func (f *atomicFloat) store(v float64) { f.bits.Store(math.Float64bits(v)) }

func (f *atomicFloat) add(d float64) {
	for {
		old := f.bits.Load()
		if f.bits.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+d)) {
			return
		}
	}
}

// Counter is a value that only goes up.
type Counter struct {
	desc
	v atomicFloat
}

// NewCounter returns a counter, to be registered.
func NewCounter(name, help string) *Counter {
	return &Counter{desc: desc{name: name, help: help, kind: kindCounter}}
}

// Inc adds 1.
func (c *Counter) Inc() { c.v.add(1) }

// Add adds d; a negative d panics, as a counter cannot go down.
func (c *Counter) Add(d float64) {
	if d < 0 {
		panic(fmt.Sprintf("metrics: counter %s: negative Add %v", c.name, d))
	}
	c.v.add(d)
}

// Value is the counter's current value.
func (c *Counter) Value() float64 { return c.v.load() }

func (c *Counter) describe() *desc { return &c.desc }

func (c *Counter) collect(dst []sample) []sample { return append(dst, sample{value: c.Value()}) }

// Gauge is a value that goes up and down.
type Gauge struct {
	desc
	v atomicFloat
}

// NewGauge returns a gauge, to be registered.
func NewGauge(name, help string) *Gauge {
	return &Gauge{desc: desc{name: name, help: help, kind: kindGauge}}
}

// Set sets the gauge to v.
func (g *Gauge) Set(v float64) { g.v.store(v) }

// Add adds d, which may be negative.
func (g *Gauge) Add(d float64) { g.v.add(d) }

// SetToCurrentTime sets the gauge to the Unix time in seconds.
func (g *Gauge) SetToCurrentTime() { g.Set(float64(time.Now().UnixNano()) / 1e9) }

// Value is the gauge's current value.
func (g *Gauge) Value() float64 { return g.v.load() }

func (g *Gauge) describe() *desc { return &g.desc }

func (g *Gauge) collect(dst []sample) []sample { return append(dst, sample{value: g.Value()}) }

// Histogram counts observations in fixed buckets. A mutex, not atomics,
// guards it so that a scrape sees buckets, sum and count from the same moment.
type Histogram struct {
	desc
	upper []float64 // bucket upper bounds, ascending; +Inf is implied
	les   []string  // the rendered le="…" label of each bucket, then of +Inf

	mu     sync.Mutex
	counts []uint64 // observations per bucket, not cumulative; the last is +Inf
	sum    float64
}

// NewHistogram returns a histogram with the given bucket upper bounds, which
// must be strictly ascending; a last bound of +Inf is dropped as implied.
func NewHistogram(name, help string, buckets []float64) *Histogram {
	if n := len(buckets); n > 0 && math.IsInf(buckets[n-1], +1) {
		buckets = buckets[:n-1]
	}
	for i := 1; i < len(buckets); i++ {
		if !(buckets[i] > buckets[i-1]) {
			panic(fmt.Sprintf("metrics: histogram %s: buckets %v are not strictly ascending", name, buckets))
		}
	}
	h := &Histogram{
		desc:   desc{name: name, help: help, kind: kindHistogram},
		upper:  slices.Clone(buckets),
		counts: make([]uint64, len(buckets)+1),
	}
	for _, b := range h.upper {
		h.les = append(h.les, `le="`+formatFloat(b)+`"`)
	}
	h.les = append(h.les, `le="+Inf"`)
	return h
}

// Observe counts v in the first bucket whose bound is at least v.
func (h *Histogram) Observe(v float64) {
	i := sort.SearchFloat64s(h.upper, v)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.counts[i]++
	h.sum += v
}

func (h *Histogram) describe() *desc { return &h.desc }

// collect appends the cumulative buckets, then _sum and _count.
func (h *Histogram) collect(dst []sample) []sample {
	h.mu.Lock()
	counts, sum := slices.Clone(h.counts), h.sum
	h.mu.Unlock()
	var cumulative uint64
	for i, n := range counts {
		cumulative += n
		dst = append(dst, sample{suffix: "_bucket", labels: h.les[i], value: float64(cumulative)})
	}
	return append(dst, sample{suffix: "_sum", value: sum}, sample{suffix: "_count", value: float64(cumulative)})
}

// Vec is a family of counters or gauges told apart by label values.
type Vec[M interface{ Value() float64 }] struct {
	desc
	newMetric func() M

	mu       sync.Mutex
	children map[string]*child[M] // by rendered labels
}

type child[M any] struct {
	values []string
	labels string // rendered, as the exposition shows them
	metric M
}

// CounterVec is a family of labelled counters.
type CounterVec = Vec[*Counter]

// GaugeVec is a family of labelled gauges.
type GaugeVec = Vec[*Gauge]

// NewCounterVec returns a counter family with the given label names, to be registered.
func NewCounterVec(name, help string, labels ...string) *CounterVec {
	return newVec(desc{name: name, help: help, kind: kindCounter, labels: labels}, func() *Counter { return new(Counter) })
}

// NewGaugeVec returns a gauge family with the given label names, to be registered.
func NewGaugeVec(name, help string, labels ...string) *GaugeVec {
	return newVec(desc{name: name, help: help, kind: kindGauge, labels: labels}, func() *Gauge { return new(Gauge) })
}

func newVec[M interface{ Value() float64 }](d desc, newMetric func() M) *Vec[M] {
	d.labels = slices.Clone(d.labels)
	return &Vec[M]{desc: d, newMetric: newMetric, children: make(map[string]*child[M])}
}

// WithLabelValues returns the metric for values, one per label name in
// order, created at zero the first time. Values of the wrong number, or not
// valid UTF-8, panic.
func (v *Vec[M]) WithLabelValues(values ...string) M {
	key := v.key(values)
	v.mu.Lock()
	defer v.mu.Unlock()
	c, ok := v.children[key]
	if !ok {
		c = &child[M]{values: slices.Clone(values), labels: key, metric: v.newMetric()}
		v.children[key] = c
	}
	return c.metric
}

// DeleteLabelValues removes the metric for values and reports whether there was one.
func (v *Vec[M]) DeleteLabelValues(values ...string) bool {
	key := v.key(values)
	v.mu.Lock()
	defer v.mu.Unlock()
	_, ok := v.children[key]
	delete(v.children, key)
	return ok
}

// DeleteByLabel removes every metric whose label name has value, and returns
// how many it removed.
func (v *Vec[M]) DeleteByLabel(name, value string) int {
	i := slices.Index(v.labels, name)
	if i < 0 {
		return 0
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	n := 0
	for key, c := range v.children {
		if c.values[i] == value {
			delete(v.children, key)
			n++
		}
	}
	return n
}

func (v *Vec[M]) key(values []string) string {
	if len(values) != len(v.labels) {
		panic(fmt.Sprintf("metrics: %s: %d label values for labels %v", v.name, len(values), v.labels))
	}
	for _, val := range values {
		if !utf8.ValidString(val) {
			panic(fmt.Sprintf("metrics: %s: label value %q is not valid UTF-8", v.name, val))
		}
	}
	return renderLabels(v.labels, values)
}

func (v *Vec[M]) describe() *desc { return &v.desc }

// collect appends one sample per metric, sorted by label values.
func (v *Vec[M]) collect(dst []sample) []sample {
	v.mu.Lock()
	children := slices.Collect(maps.Values(v.children))
	v.mu.Unlock()
	slices.SortFunc(children, func(a, b *child[M]) int { return slices.Compare(a.values, b.values) })
	for _, c := range children {
		dst = append(dst, sample{labels: c.labels, value: c.metric.Value()})
	}
	return dst
}
