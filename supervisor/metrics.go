package supervisor

import (
	"errors"

	"github.com/lbctl/lbctl/metrics"
)

// programMetrics are the program gauges and counters; a nil one records nothing.
type programMetrics struct {
	state    *metrics.GaugeVec
	restarts *metrics.CounterVec
}

func newMetrics(reg *metrics.Registry) *programMetrics {
	if reg == nil {
		return nil
	}
	m := &programMetrics{
		state: metrics.NewGaugeVec("lbctl_program_state",
			"1 for the state each supervised program is in (supervisord's states), 0 for the others.",
			"program", "state"),
		restarts: metrics.NewCounterVec("lbctl_program_restarts_total",
			"Starts of a supervised program after its first.", "program"),
	}
	m.state = register(reg, m.state)
	m.restarts = register(reg, m.restarts)
	return m
}

// register registers c, or reuses the collector already registered under its name.
func register[C metrics.Collector](reg *metrics.Registry, c C) C {
	if err := reg.Register(c); err != nil {
		var are *metrics.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.Existing.(C); ok {
				return existing
			}
		}
	}
	return c
}

func (m *programMetrics) setState(program string, st State) {
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

func (m *programMetrics) restarted(program string) {
	if m == nil {
		return
	}
	m.restarts.WithLabelValues(program).Inc()
}

func (m *programMetrics) forget(program string) {
	if m == nil {
		return
	}
	m.state.DeleteByLabel("program", program)
	m.restarts.DeleteLabelValues(program)
}
