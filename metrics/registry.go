package metrics

import (
	"bufio"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// ContentType is the media type of WriteText's output: the Prometheus text
// exposition format, version 0.0.4.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// Collector is a metric, or a family of labelled metrics, that a Registry
// can hold: *Counter, *Gauge, *Histogram, *CounterVec and *GaugeVec.
type Collector interface {
	describe() *desc
	// collect appends the current samples to dst.
	collect(dst []sample) []sample
}

// desc is what a collector is, as its # HELP and # TYPE lines say.
type desc struct {
	name, help, kind string
	labels           []string
}

// sample is one line of the exposition: name+suffix{labels} value.
type sample struct {
	suffix string // "", or "_bucket", "_sum", "_count" for a histogram
	labels string // rendered label pairs without braces: a="x",b="y"
	value  float64
}

// AlreadyRegisteredError is Register's error when a collector with the same
// name, type, help and label names is registered already; callers may use
// Existing instead of theirs.
type AlreadyRegisteredError struct {
	Existing Collector
}

func (e *AlreadyRegisteredError) Error() string {
	return fmt.Sprintf("metric %s is registered already", e.Existing.describe().name)
}

// Registry holds collectors by name and writes them all out.
type Registry struct {
	mu     sync.Mutex
	byName map[string]Collector
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{byName: make(map[string]Collector)}
}

// Register adds c. A name in use is an *AlreadyRegisteredError when both
// describe the same metric and a plain error when they differ.
func (r *Registry) Register(c Collector) error {
	d := c.describe()
	if err := d.validate(); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if old, ok := r.byName[d.name]; ok {
		if old.describe().sameAs(d) {
			return &AlreadyRegisteredError{Existing: old}
		}
		return fmt.Errorf("metric %s is registered already with another type, help or label names", d.name)
	}
	r.byName[d.name] = c
	return nil
}

// MustRegister registers every collector and panics on the first error.
func (r *Registry) MustRegister(cs ...Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

// WriteText writes every collector in the text format, sorted by name. A
// vector nothing has been recorded in yet is left out.
func (r *Registry) WriteText(w io.Writer) error {
	bw := bufio.NewWriter(w)
	var samples []sample
	for _, c := range r.sorted() {
		if samples = c.collect(samples[:0]); len(samples) > 0 {
			writeFamily(bw, c.describe(), samples)
		}
	}
	return bw.Flush()
}

func (r *Registry) sorted() []Collector {
	r.mu.Lock()
	defer r.mu.Unlock()
	names := slices.Sorted(maps.Keys(r.byName))
	cs := make([]Collector, len(names))
	for i, name := range names {
		cs[i] = r.byName[name]
	}
	return cs
}

// writeFamily writes one metric's # HELP and # TYPE lines and its samples;
// bufio.Writer keeps the first error for Flush.
func writeFamily(w *bufio.Writer, d *desc, samples []sample) {
	w.WriteString("# HELP " + d.name + " ")
	helpEscaper.WriteString(w, d.help)
	w.WriteString("\n# TYPE " + d.name + " " + d.kind + "\n")
	for _, s := range samples {
		w.WriteString(d.name + s.suffix)
		if s.labels != "" {
			w.WriteString("{" + s.labels + "}")
		}
		w.WriteString(" " + formatFloat(s.value) + "\n")
	}
}

var (
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
)

// renderLabels renders names[i]="values[i]" pairs, comma separated. Escaping
// keeps the result unique per value list, so it also serves as a map key.
func renderLabels(names, values []string) string {
	var b strings.Builder
	for i, name := range names {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(name + `="`)
		labelEscaper.WriteString(&b, values[i])
		b.WriteByte('"')
	}
	return b.String()
}

// formatFloat writes v as client_golang did: shortest 'g' form, +Inf, -Inf, NaN.
func formatFloat(v float64) string {
	return strconv.FormatFloat(v, 'g', -1, 64)
}

func (d *desc) validate() error {
	if !validName(d.name, true) {
		return fmt.Errorf("invalid metric name %q", d.name)
	}
	for _, l := range d.labels {
		if !validName(l, false) || strings.HasPrefix(l, "__") || (d.kind == kindHistogram && l == "le") {
			return fmt.Errorf("metric %s: invalid label name %q", d.name, l)
		}
	}
	return nil
}

func (d *desc) sameAs(o *desc) bool {
	return d.name == o.name && d.help == o.help && d.kind == o.kind && slices.Equal(d.labels, o.labels)
}

// validName reports whether s matches [a-zA-Z_][a-zA-Z0-9_]*, with ':'
// allowed as well in metric names.
func validName(s string, metric bool) bool {
	for i, c := range s {
		ok := c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			(i > 0 && c >= '0' && c <= '9') || (metric && c == ':')
		if !ok {
			return false
		}
	}
	return s != ""
}
