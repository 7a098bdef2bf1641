package metrics

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// hostile is a label value and help text with everything the text format escapes.
const hostile = "a\"b\\c\nd"

func TestServesMetricsAndHealth(t *testing.T) {
	reg := NewRegistry()
	m := New(reg)
	m.ConsulErrors.Inc()
	m.Reloads.WithLabelValues(OutcomeApplied).Inc()
	var unhealthy error
	lis, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, lis, Handler(reg, func() error { return unhealthy }), slog.New(slog.DiscardHandler))
	}()
	base := "http://" + lis.Addr().String()

	resp, body := get(t, base+"/metrics", 200)
	if ct := resp.Header.Get("Content-Type"); ct != ContentType {
		t.Errorf("Content-Type %q, want %q", ct, ContentType)
	}
	families := parse(t, body)
	if got := families["lbctl_consul_errors_total"].GetMetric()[0].GetCounter().GetValue(); got != 1 {
		t.Errorf("lbctl_consul_errors_total = %v, want 1", got)
	}
	if got := sampleValues(families["lbctl_reloads_total"]); got["outcome=applied"] != 1 || got["outcome=rejected"] != 0 || len(got) != 6 {
		t.Errorf("lbctl_reloads_total = %v, want applied 1 and the five other outcomes at 0", got)
	}
	get(t, base+"/healthz", 200)
	unhealthy = errors.New("nginx master gone")
	if _, body := get(t, base+"/healthz", 503); !strings.Contains(body, "nginx master gone") {
		t.Errorf("healthz body %q", body)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// The exposition is byte for byte what client_golang wrote for the same
// metrics (testdata/client_golang.txt was captured from it before the switch).
func TestExpositionMatchesClientGolang(t *testing.T) {
	reg := NewRegistry()
	m := New(reg)
	m.ConsulErrors.Inc()
	m.ChangeToServing.Observe(0.012)
	m.ChangeToServing.Observe(3)
	m.LastReload.Set(1732500000.123)
	m.ValidationFailures.WithLabelValues(hostile).Inc()
	want, err := os.ReadFile("testdata/client_golang.txt")
	if err != nil {
		t.Fatal(err)
	}
	if got := writeText(t, reg); got != string(want) {
		t.Errorf("exposition differs from client_golang's:\n--- got\n%s\n--- want\n%s", got, want)
	}
}

func TestExpositionParsesBack(t *testing.T) {
	reg := NewRegistry()
	m := New(reg)
	for _, v := range []float64{0.005, 0.0051, 0.02, 0.02, 7} { // 0.005 is on a bound: le is inclusive
		m.ChangeToServing.Observe(v)
	}
	m.ValidationFailures.WithLabelValues(hostile).Add(2)
	m.ValidationFailures.WithLabelValues("templates/x.ctmpl").Inc()
	programs := NewGaugeVec("lbctl_program_state", "help with \\ and\nnewline", "program", "state")
	reg.MustRegister(programs)
	programs.WithLabelValues("zeta", "RUNNING").Set(1)
	programs.WithLabelValues(hostile, "STOPPED").Set(0)
	programs.WithLabelValues("alpha", "RUNNING").Set(1)
	m.OldWorkers.Add(3)

	text := writeText(t, reg)
	families := parse(t, text)
	wantTypes := map[string]dto.MetricType{
		"lbctl_renders_total": dto.MetricType_COUNTER, "lbctl_reloads_total": dto.MetricType_COUNTER,
		"lbctl_validation_failures_total": dto.MetricType_COUNTER, "lbctl_change_to_serving_seconds": dto.MetricType_HISTOGRAM,
		"lbctl_nginx_old_generations": dto.MetricType_GAUGE, "lbctl_nginx_old_workers": dto.MetricType_GAUGE,
		"lbctl_nginx_old_generation_lifetime_seconds": dto.MetricType_HISTOGRAM,
		"lbctl_last_reload_timestamp_seconds":         dto.MetricType_GAUGE, "lbctl_consul_errors_total": dto.MetricType_COUNTER,
		"lbctl_program_state":      dto.MetricType_GAUGE,
		"lbctl_live_updates_total": dto.MetricType_COUNTER, "lbctl_change_to_live_seconds": dto.MetricType_HISTOGRAM,
		"lbctl_consul_queries_waiting": dto.MetricType_GAUGE, "lbctl_consul_request_concurrency": dto.MetricType_GAUGE,
	}
	for name, typ := range wantTypes {
		if got := families[name].GetType(); got != typ {
			t.Errorf("%s: type %v, want %v", name, got, typ)
		}
	}
	if len(families) != len(wantTypes) {
		t.Errorf("%d families, want %d", len(families), len(wantTypes))
	}
	if got := families["lbctl_program_state"].GetHelp(); got != "help with \\ and\nnewline" {
		t.Errorf("help read back as %q", got)
	}
	if got := sampleValues(families["lbctl_validation_failures_total"]); got["source="+hostile] != 2 || got["source=templates/x.ctmpl"] != 1 {
		t.Errorf("validation failures read back as %v", got)
	}
	if got := sampleValues(families["lbctl_program_state"]); got["program="+hostile+",state=STOPPED"] != 0 || len(got) != 3 {
		t.Errorf("program states read back as %v", got)
	}
	if got := families["lbctl_nginx_old_workers"].GetMetric()[0].GetGauge().GetValue(); got != 3 {
		t.Errorf("old workers = %v, want 3", got)
	}
	checkHistogram(t, families["lbctl_change_to_serving_seconds"].GetMetric()[0].GetHistogram())
	checkSorted(t, text)
}

func checkHistogram(t *testing.T, h *dto.Histogram) {
	t.Helper()
	if h.GetSampleCount() != 5 || h.GetSampleSum() != 0.005+0.0051+0.02+0.02+7 {
		t.Errorf("count %d sum %v, want 5 and %v", h.GetSampleCount(), h.GetSampleSum(), 0.005+0.0051+0.02+0.02+7)
	}
	want := map[float64]uint64{0.005: 1, 0.01: 2, 0.015: 2, 0.02: 4, 5: 4, math.Inf(+1): 5}
	checked := 0
	for _, b := range h.GetBucket() {
		if n, ok := want[b.GetUpperBound()]; ok {
			checked++
			if b.GetCumulativeCount() != n {
				t.Errorf("bucket le=%v: %d, want %d", b.GetUpperBound(), b.GetCumulativeCount(), n)
			}
		}
	}
	if checked != len(want) {
		t.Errorf("found %d of the %d buckets checked", checked, len(want))
	}
	if len(h.GetBucket()) != 16 {
		t.Errorf("%d buckets, want 15 and +Inf", len(h.GetBucket()))
	}
}

// checkSorted checks families come sorted by name and, within one, samples by label values.
func checkSorted(t *testing.T, text string) {
	t.Helper()
	var names, states []string
	for line := range strings.Lines(text) {
		if name, ok := strings.CutPrefix(line, "# TYPE "); ok {
			names = append(names, strings.Fields(name)[0])
		}
		if strings.HasPrefix(line, "lbctl_program_state{") {
			states = append(states, line)
		}
	}
	if !slices.IsSorted(names) {
		t.Errorf("families not sorted: %v", names)
	}
	if len(states) != 3 || !strings.Contains(states[0], `"a\"b\\c\nd"`) || !strings.Contains(states[2], `"zeta"`) {
		t.Errorf("program states not sorted by label values, or hostile value not escaped:\n%s", strings.Join(states, ""))
	}
}

func TestRegister(t *testing.T) {
	reg := NewRegistry()
	first := NewCounterVec("x_total", "X.", "a")
	reg.MustRegister(first)
	var are *AlreadyRegisteredError
	if err := reg.Register(NewCounterVec("x_total", "X.", "a")); !errors.As(err, &are) || are.Existing != first {
		t.Errorf("same metric again: %v, want AlreadyRegisteredError with the first", err)
	}
	for _, c := range []Collector{
		NewCounterVec("x_total", "X.", "b"), NewGaugeVec("x_total", "X.", "a"), NewCounterVec("x_total", "Y.", "a"),
	} {
		if err := reg.Register(c); err == nil || errors.As(err, &are) {
			t.Errorf("a different %s: %v, want a plain error", c.describe().name, err)
		}
	}
	for _, c := range []Collector{
		NewCounter("", "h"), NewCounter("1x", "h"), NewCounter("x-y", "h"), NewCounterVec("v", "h", "__reserved"),
		NewCounterVec("v", "h", "a:b"), first.WithLabelValues("child"),
	} {
		if err := reg.Register(c); err == nil {
			t.Errorf("%+v registered", c.describe())
		}
	}
	if err := reg.Register(NewGauge("ns:sub_x", "colons are fine in metric names")); err != nil {
		t.Error(err)
	}
}

func TestVecDeletes(t *testing.T) {
	v := NewGaugeVec("state", "h", "program", "state")
	for _, p := range []string{"a", "b"} {
		for _, s := range []string{"RUNNING", "STOPPED"} {
			v.WithLabelValues(p, s).Set(1)
		}
	}
	if !v.DeleteLabelValues("b", "STOPPED") || v.DeleteLabelValues("b", "STOPPED") {
		t.Error("DeleteLabelValues: want true once, then false")
	}
	if n := v.DeleteByLabel("program", "a"); n != 2 {
		t.Errorf("DeleteByLabel removed %d, want 2", n)
	}
	if n := v.DeleteByLabel("nosuchlabel", "b"); n != 0 {
		t.Errorf("DeleteByLabel on an unknown label removed %d", n)
	}
	if got := v.collect(nil); len(got) != 1 || got[0].labels != `program="b",state="RUNNING"` {
		t.Errorf("left %+v, want only b RUNNING", got)
	}
}

func TestMisusePanics(t *testing.T) {
	v := NewCounterVec("x_total", "h", "a")
	for name, f := range map[string]func(){
		"too many label values": func() { v.WithLabelValues("1", "2") },
		"invalid UTF-8":         func() { v.WithLabelValues("\xff") },
		"negative counter Add":  func() { v.WithLabelValues("1").Add(-1) },
		"unsorted buckets":      func() { NewHistogram("h", "h", []float64{1, 0.5}) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f()
		}()
	}
}

// Writers and a scraper at once; run with -race.
func TestConcurrentUpdatesAndScrapes(t *testing.T) {
	reg := NewRegistry()
	m := New(reg)
	const writers, each = 8, 500
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for i := range each {
				m.Renders.Inc()
				m.Reloads.WithLabelValues(OutcomeApplied).Inc()
				m.ChangeToServing.Observe(float64(i) / each)
				m.OldWorkers.Set(float64(i))
			}
		})
	}
	wg.Go(func() { // t.Fatal belongs to the test's goroutine: only t.Error here
		for range 50 {
			var text bytes.Buffer
			reg.WriteText(&text)
			parser := expfmt.NewTextParser(model.UTF8Validation)
			if _, err := parser.TextToMetricFamilies(&text); err != nil {
				t.Errorf("scrape during updates: %v", err)
			}
		}
	})
	wg.Wait()
	families := parse(t, writeText(t, reg))
	if got := m.Renders.Value(); got != writers*each {
		t.Errorf("renders = %v, want %d", got, writers*each)
	}
	if got := families["lbctl_change_to_serving_seconds"].GetMetric()[0].GetHistogram().GetSampleCount(); got != writers*each {
		t.Errorf("histogram count = %d, want %d", got, writers*each)
	}
}

func TestListenRefusesNonLoopback(t *testing.T) {
	if _, err := Listen("0.0.0.0:0"); err == nil {
		t.Fatal("want an error for 0.0.0.0")
	}
}

func writeText(t *testing.T, reg *Registry) string {
	t.Helper()
	var b bytes.Buffer
	if err := reg.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// parse reads text with Prometheus's own parser.
func parse(t *testing.T, text string) map[string]*dto.MetricFamily {
	t.Helper()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("Prometheus cannot parse the exposition: %v\n%s", err, text)
	}
	return families
}

// sampleValues maps "name=value,name=value" of each counter or gauge sample to its value.
func sampleValues(f *dto.MetricFamily) map[string]float64 {
	values := make(map[string]float64)
	for _, m := range f.GetMetric() {
		var pairs []string
		for _, l := range m.GetLabel() {
			pairs = append(pairs, l.GetName()+"="+l.GetValue())
		}
		v := m.GetGauge().GetValue()
		if m.Counter != nil {
			v = m.GetCounter().GetValue()
		}
		values[strings.Join(pairs, ",")] = v
	}
	return values
}

func get(t *testing.T, url string, code int) (*http.Response, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != code {
		t.Fatalf("GET %s: %d, want %d: %s", url, resp.StatusCode, code, b)
	}
	return resp, string(b)
}
