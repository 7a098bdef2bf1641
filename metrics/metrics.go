// Package metrics holds lbctl's Prometheus metrics and serves them, with
// /healthz, on a loopback address. Metrics live in a registry passed in, never
// the global one, so tests and several controllers do not collide.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Reload outcomes, the values of the "outcome" label of lbctl_reloads_total.
const (
	OutcomeApplied   = "applied"
	OutcomeRejected  = "rejected"
	OutcomeTimedOut  = "timed_out"
	OutcomeFailed    = "failed"
	OutcomeWritten   = "written" // files swapped, no nginx running to signal
	OutcomeUnchanged = "unchanged"
)

// Metrics are lbctl's counters, gauges and histograms.
type Metrics struct {
	// Renders counts renders handed to the reload controller.
	Renders prometheus.Counter
	// Reloads counts reload attempts by outcome.
	Reloads *prometheus.CounterVec
	// ValidationFailures counts candidates nginx -t rejected, by source template.
	ValidationFailures *prometheus.CounterVec
	// ChangeToServing is the time from a Consul change being seen to nginx
	// confirmed serving the config that reflects it.
	ChangeToServing prometheus.Histogram
	// OldGenerations is how many generations of old nginx workers are still alive.
	OldGenerations prometheus.Gauge
	// OldWorkers is how many old nginx worker processes are still alive.
	OldWorkers prometheus.Gauge
	// OldGenerationLifetime is how long an old generation lived after its reload.
	OldGenerationLifetime prometheus.Histogram
	// LastReload is the Unix time of the last confirmed reload.
	LastReload prometheus.Gauge
	// ConsulErrors counts failed Consul requests; any component may add to it.
	ConsulErrors prometheus.Counter
}

// New creates the metrics and registers them with reg.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Renders: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lbctl_renders_total", Help: "Renders handed to the reload controller."}),
		Reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lbctl_reloads_total", Help: "nginx reload attempts by outcome."}, []string{"outcome"}),
		ValidationFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lbctl_validation_failures_total", Help: "Candidate configs rejected by nginx -t, by template."}, []string{"source"}),
		ChangeToServing: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "lbctl_change_to_serving_seconds",
			Help:    "Time from a Consul change being seen to nginx confirmed serving it.",
			Buckets: []float64{.005, .01, .015, .02, .025, .03, .04, .05, .075, .1, .25, .5, 1, 2.5, 5}}),
		OldGenerations: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lbctl_nginx_old_generations", Help: "Generations of old nginx workers still alive after a reload."}),
		OldWorkers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lbctl_nginx_old_workers", Help: "Old nginx worker processes still alive after a reload."}),
		OldGenerationLifetime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "lbctl_nginx_old_generation_lifetime_seconds",
			Help:    "How long an old generation of nginx workers lived after the reload that replaced it.",
			Buckets: []float64{.01, .05, .1, .5, 1, 5, 10, 30, 60, 120, 300}}),
		LastReload: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lbctl_last_reload_timestamp_seconds", Help: "Unix time of the last confirmed nginx reload."}),
		ConsulErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lbctl_consul_errors_total", Help: "Failed Consul requests."}),
	}
	reg.MustRegister(m.Renders, m.Reloads, m.ValidationFailures, m.ChangeToServing, m.OldGenerations,
		m.OldWorkers, m.OldGenerationLifetime, m.LastReload, m.ConsulErrors)
	for _, o := range []string{OutcomeApplied, OutcomeRejected, OutcomeTimedOut, OutcomeFailed, OutcomeWritten, OutcomeUnchanged} {
		m.Reloads.WithLabelValues(o) // expose every outcome at 0 from the start
	}
	return m
}
