package config

import (
	"net"
	"time"
)

// Wait folds Consul changes that arrive close together into one nginx
// reload: a reload happens once no change came for Min, and never later than
// Max after the first change of a burst (like consul-template's wait), and
// never sooner than BetweenReloads after the previous reload.
//
// Defaults: Min 10ms is enough for changes made "at the same moment" (two
// instances put into maintenance together reach lbctl within a few ms) while
// keeping change-to-serving near 20ms. Max 250ms bounds the wait in a storm.
// BetweenReloads 500ms: every reload sends GOAWAY on every client
// connection, and each client then reconnects and sends again the calls the
// old worker had not read. gRPC clients retry such a call transparently only
// once, so a second reload that lands before those retries are read fails
// them ("the connection is draining"). On a loaded 2-core machine that wave
// took up to 200ms to be read. See docs/reload.md.
type Wait struct {
	Min            time.Duration `yaml:"min"`
	Max            time.Duration `yaml:"max"`
	BetweenReloads time.Duration `yaml:"between_reloads"`
}

func (w *Wait) setDefaults() {
	if w.Min == 0 {
		w.Min = 10 * time.Millisecond
	}
	if w.Max == 0 {
		w.Max = max(250*time.Millisecond, 4*w.Min)
	}
	if w.BetweenReloads == 0 {
		w.BetweenReloads = 500 * time.Millisecond
	}
}

func (w *Wait) validate(report reporter) {
	if w.Min < 0 || w.Max < w.Min {
		report("wait", "want 0 <= min <= max, got min %s max %s", w.Min, w.Max)
	}
	if w.BetweenReloads < 0 {
		report("wait.between_reloads", "want a duration >= 0, got %s", w.BetweenReloads)
	}
}

// HTTP is the read-only observability listener: /metrics and /healthz.
type HTTP struct {
	// Address to listen on; empty turns the listener off.
	Address string `yaml:"address"`
}

func (h *HTTP) setDefaults() {}

func (h *HTTP) validate(report reporter) {
	if h.Address == "" {
		return
	}
	if _, _, err := net.SplitHostPort(h.Address); err != nil {
		report("http.address", "want host:port, got %q", h.Address)
	}
}

// Control is the unix socket through which lbctl status and lbctl ctl talk to
// a running lbctl. Only this socket can change anything.
type Control struct {
	Socket string `yaml:"socket"`
	// Mode is the socket's file mode (default 0600).
	Mode uint32 `yaml:"mode"`
}

func (c *Control) setDefaults() {
	if c.Socket == "" {
		c.Socket = "/run/lbctl.sock"
	}
	if c.Mode == 0 {
		c.Mode = 0o600
	}
}

func (c *Control) validate(report reporter) {}
