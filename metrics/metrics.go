// Package metrics holds lbctl's Prometheus metrics and serves them, with
// /healthz, on a loopback address, in the Prometheus text format. It is a
// small in-house stand-in for client_golang, which cost the binary protobuf
// and procfs. Metrics live in a registry passed in, never a global one, so
// tests and several controllers do not collide.
package metrics

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
	Renders *Counter
	// Reloads counts reload attempts by outcome.
	Reloads *CounterVec
	// ValidationFailures counts candidates nginx -t rejected, by source template.
	ValidationFailures *CounterVec
	// ChangeToServing is the time from a Consul change being seen to nginx
	// confirmed serving the config that reflects it.
	ChangeToServing *Histogram
	// OldGenerations is how many generations of old nginx workers are still alive.
	OldGenerations *Gauge
	// OldWorkers is how many old nginx worker processes are still alive.
	OldWorkers *Gauge
	// OldGenerationLifetime is how long an old generation lived after its reload.
	OldGenerationLifetime *Histogram
	// LastReload is the Unix time of the last confirmed reload.
	LastReload *Gauge
	// ConsulErrors counts failed Consul requests; any component may add to it.
	ConsulErrors *Counter
	// LiveUpdates counts pushes of live upstreams to nginx by outcome.
	LiveUpdates *CounterVec
	// ChangeToLive is the time from a Consul change being seen to nginx
	// confirmed holding the live upstreams that reflect it (read back).
	ChangeToLive *Histogram
	// ConsulWaiting is how many watched health queries wait for Consul, by
	// reason: queued (for a free request slot), rate_limited (the agent
	// answered 429), failing (another error), unanswered (never answered
	// yet: nothing is rendered while it is above 0).
	ConsulWaiting *GaugeVec
	// ConsulConcurrency is how many health requests the watcher may run at
	// once now (halved at each 429, grown back one by one).
	ConsulConcurrency *Gauge
}

// Reasons a health query waits for Consul, the values of the "reason"
// label of lbctl_consul_queries_waiting.
const (
	WaitingQueued      = "queued"
	WaitingRateLimited = "rate_limited"
	WaitingFailing     = "failing"
	WaitingUnanswered  = "unanswered"
)

// New creates the metrics and registers them with reg.
func New(reg *Registry) *Metrics {
	m := &Metrics{
		Renders:            NewCounter("lbctl_renders_total", "Renders handed to the reload controller."),
		Reloads:            NewCounterVec("lbctl_reloads_total", "nginx reload attempts by outcome.", "outcome"),
		ValidationFailures: NewCounterVec("lbctl_validation_failures_total", "Candidate configs rejected by nginx -t, by template.", "source"),
		ChangeToServing: NewHistogram("lbctl_change_to_serving_seconds",
			"Time from a Consul change being seen to nginx confirmed serving it.",
			[]float64{.005, .01, .015, .02, .025, .03, .04, .05, .075, .1, .25, .5, 1, 2.5, 5}),
		OldGenerations: NewGauge("lbctl_nginx_old_generations", "Generations of old nginx workers still alive after a reload."),
		OldWorkers:     NewGauge("lbctl_nginx_old_workers", "Old nginx worker processes still alive after a reload."),
		OldGenerationLifetime: NewHistogram("lbctl_nginx_old_generation_lifetime_seconds",
			"How long an old generation of nginx workers lived after the reload that replaced it.",
			[]float64{.01, .05, .1, .5, 1, 5, 10, 30, 60, 120, 300}),
		LastReload:   NewGauge("lbctl_last_reload_timestamp_seconds", "Unix time of the last confirmed nginx reload."),
		ConsulErrors: NewCounter("lbctl_consul_errors_total", "Failed Consul requests."),
		LiveUpdates:  NewCounterVec("lbctl_live_updates_total", "Pushes of live upstreams to nginx by outcome.", "outcome"),
		ChangeToLive: NewHistogram("lbctl_change_to_live_seconds",
			"Time from a Consul change being seen to nginx confirmed holding the live upstreams that reflect it.",
			[]float64{.0005, .001, .002, .003, .005, .0075, .01, .025, .05, .1, .25, 1}),
		ConsulWaiting: NewGaugeVec("lbctl_consul_queries_waiting",
			"Watched health queries waiting for Consul, by reason (queued, rate_limited, failing, unanswered).", "reason"),
		ConsulConcurrency: NewGauge("lbctl_consul_request_concurrency", "Health requests the watcher may run at once now."),
	}
	reg.MustRegister(m.Renders, m.Reloads, m.ValidationFailures, m.ChangeToServing, m.OldGenerations,
		m.OldWorkers, m.OldGenerationLifetime, m.LastReload, m.ConsulErrors, m.LiveUpdates, m.ChangeToLive, m.ConsulWaiting, m.ConsulConcurrency)
	for _, o := range []string{OutcomeApplied, OutcomeRejected, OutcomeTimedOut, OutcomeFailed, OutcomeWritten, OutcomeUnchanged} {
		m.Reloads.WithLabelValues(o) // expose every outcome at 0 from the start
		m.LiveUpdates.WithLabelValues(o)
	}
	for _, r := range []string{WaitingQueued, WaitingRateLimited, WaitingFailing, WaitingUnanswered} {
		m.ConsulWaiting.WithLabelValues(r)
	}
	return m
}
