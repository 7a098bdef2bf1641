// Package consultemplate renders existing consul-template templates,
// unchanged, with consul-template itself used as a library: its template
// package (every template function, parsing, execution), its watch package
// (blocking queries with stale reads, index and equality checks) and its
// dependency package (the Consul client). What templates see of Consul is
// screened first (screen.go) unless a template has raw_consul_data. It
// renders in memory and hands complete sets of files to its caller; it
// never writes files.
package consultemplate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"

	dep "github.com/hashicorp/consul-template/dependency"

	"github.com/lbctl/lbctl/config"
	"github.com/lbctl/lbctl/render"
)

// ErrNotRendered is returned by Once when Consul did not give every
// template its data before the context ended.
var ErrNotRendered = errors.New("templates not rendered")

// Engine renders a fixed list of templates from one Consul agent.
type Engine struct {
	templates []*loadedTemplate
	clients   *dep.ClientSet
	address   string
	redact    func(error) error
	backoff   backoff
	log       *slog.Logger
}

// New reads and parses every template and builds the Consul client from c.
// It does not contact Consul. The first call also sends consul-template's
// own log lines (written with the standard library's global logger) to log,
// unless the program already pointed that logger elsewhere.
func New(templates []config.Template, c config.Consul, log *slog.Logger) (*Engine, error) {
	loaded, err := loadTemplates(templates)
	if err != nil {
		return nil, err
	}
	token, err := consulToken(c)
	if err != nil {
		return nil, err
	}
	clients, err := newClientSet(c, token)
	if err != nil {
		return nil, err
	}
	routeLibraryLogOnce(log)
	return &Engine{
		templates: loaded,
		clients:   clients,
		address:   c.HostPort(),
		redact:    redactor(token),
		backoff:   defaultBackoff,
		log:       log.With("component", "consul-template"),
	}, nil
}

// Run watches Consul and calls emit with every template's output, in config
// order, each time every template has its data and some output changed. A
// template that rendered before and now fails, or waits for a query it just
// started, contributes its last output, as consul-template leaves its file
// alone then. Run keeps retrying while Consul is unreachable and never emits
// output rendered without data. It returns nil when ctx ends, or an error
// when a template fails before it ever rendered or uses Vault or Nomad
// (consul-template would exit then too).
func (e *Engine) Run(ctx context.Context, emit func([]render.File)) error {
	s := e.newSession(false)
	defer s.stop()
	var last [][]byte
	for {
		outputs, err := s.renderAll()
		if err != nil {
			return err
		}
		if outputs != nil && changed(last, outputs) {
			last = outputs
			emit(e.files(outputs))
		}
		if err := s.wait(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}

// Once renders every template once, waiting until Consul has answered every
// query they make. When ctx ends first it returns an error wrapping
// ErrNotRendered that says what it was waiting for and Consul's last error.
func (e *Engine) Once(ctx context.Context) ([]render.File, error) {
	s := e.newSession(true)
	defer s.stop()
	for {
		outputs, err := s.renderAll()
		if err != nil {
			return nil, err
		}
		if outputs != nil {
			return e.files(outputs), nil
		}
		if err := s.wait(ctx); err != nil {
			if ctx.Err() == nil {
				return nil, err
			}
			return nil, s.notRendered(err)
		}
	}
}

// files pairs each template with its output.
func (e *Engine) files(outputs [][]byte) []render.File {
	files := make([]render.File, len(e.templates))
	for i, t := range e.templates {
		files[i] = t.file(outputs[i])
	}
	return files
}

// changed reports whether any output differs from the last emitted ones.
func changed(last, outputs [][]byte) bool {
	if last == nil {
		return true
	}
	for i := range outputs {
		if !bytes.Equal(last[i], outputs[i]) {
			return true
		}
	}
	return false
}

// notRendered explains why Once gave up.
func (s *session) notRendered(cause error) error {
	last := "none"
	if err := s.lastConsulError(); err != nil {
		last = err.Error()
	}
	return fmt.Errorf("%w: consul at %s: %w while waiting for %s (last consul error: %s)",
		ErrNotRendered, s.e.address, cause, s.missingList(), last)
}
