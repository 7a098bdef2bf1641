package supervisor

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the program gauges and counters; a nil *metrics records nothing.
type metrics struct {
	state    *prometheus.GaugeVec
	restarts *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	if reg == nil {
		return nil
	}
	m := &metrics{
		state: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "lbctl_program_state",
			Help: "1 for the state each supervised program is in (supervisord's states), 0 for the others.",
		}, []string{"program", "state"}),
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lbctl_program_restarts_total",
			Help: "Starts of a supervised program after its first.",
		}, []string{"program"}),
	}
	m.state = register(reg, m.state)
	m.restarts = register(reg, m.restarts)
	return m
}

// register registers c, or reuses the collector already registered under its name.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
	}
	return c
}

func (m *metrics) setState(program string, st State) {
	if m == nil {
		return
	}
	for i, name := range stateNames {
		v := 0.0
		if State(i) == st {
			v = 1
		}
		m.state.WithLabelValues(program, name).Set(v)
	}
}

func (m *metrics) restarted(program string) {
	if m == nil {
		return
	}
	m.restarts.WithLabelValues(program).Inc()
}

func (m *metrics) forget(program string) {
	if m == nil {
		return
	}
	m.state.DeletePartialMatch(prometheus.Labels{"program": program})
	m.restarts.DeleteLabelValues(program)
}
