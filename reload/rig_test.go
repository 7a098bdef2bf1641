package reload

import (
	"log/slog"
	"testing"

	"github.com/lbctl/lbctl/config"
	"github.com/lbctl/lbctl/internal/testrig"
	"github.com/lbctl/lbctl/metrics"
)

// rig is a controller on a real nginx. The whole pipeline (Consul, render
// engine, controller) is built by package lb; its tests are in reload/e2etest.
type rig struct {
	t     *testing.T
	nginx *testrig.Nginx
	ctl   *Controller
	m     *metrics.Metrics
	dest  string // the file the test renders into
}

// reloads is how many reloads ended with outcome.
func (r *rig) reloads(outcome Outcome) int {
	return int(counter(r.m.Reloads.WithLabelValues(string(outcome))))
}

func counter(c *metrics.Counter) float64 { return c.Value() }

func testLogger(t *testing.T) *slog.Logger { return testrig.Logger(t) }

func nginxConfig(n *testrig.Nginx) config.Nginx {
	return nginxConfigOf(n.Bin, n.MainConf, n.Dir, n.PIDFile)
}

func nginxConfigOf(bin, main, prefix, pidFile string) config.Nginx {
	return config.Nginx{Binary: bin, Config: main, Prefix: prefix, PIDFile: pidFile}
}

func newMetrics() *metrics.Metrics { return metrics.New(metrics.NewRegistry()) }
