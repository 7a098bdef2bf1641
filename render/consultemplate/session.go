package consultemplate

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	ctconfig "github.com/hashicorp/consul-template/config"
	dep "github.com/hashicorp/consul-template/dependency"
	cttemplate "github.com/hashicorp/consul-template/template"
	"github.com/hashicorp/consul-template/watch"
)

// drainAfterStop is how long a stopped session keeps reading the watcher's
// server-error channel: a view that failed just before the stop sends on it
// without watching for the stop, and would otherwise block forever.
const drainAfterStop = 5 * time.Second

// session is one Run or Once: its own watcher (one blocking query per
// dependency the templates use) and brains (the latest data of each):
// screened for templates without raw_consul_data, as Consul gave it for
// those with. A brain no template reads is nil.
type session struct {
	e        *Engine
	once     bool
	watcher  *watch.Watcher
	screened *cttemplate.Brain
	raw      *cttemplate.Brain
	leftOut  map[string][]leftOut // by dependency: what screening left out of its last data
	states   []templateState
	watched  map[string]dep.Dependency
	log      *slog.Logger
	done     chan struct{} // closed by stop
	quiet    chan struct{} // closed when the drainer has stopped logging

	mu        sync.Mutex
	lastError error // the last error Consul gave, for Once's failure message
}

// templateState is what a session knows of one template.
type templateState struct {
	used     *dep.Set // dependencies of its last successful execution
	missing  *dep.Set // those of them without data yet
	output   []byte   // its last complete render (nil when that was empty)
	rendered bool     // whether output holds a render yet
}

func (e *Engine) newSession(once bool) *session {
	retry := e.backoff.retryForever()
	s := &session{
		e:    e,
		once: once,
		watcher: watch.NewWatcher(&watch.NewWatcherInput{
			Clients:            e.clients,
			MaxStale:           ctconfig.DefaultMaxStale,
			BlockQueryWaitTime: ctconfig.DefaultBlockQueryWaitTime,
			Once:               once,
			RetryFuncConsul:    retry,
			RetryFuncDefault:   retry,
		}),
		leftOut: map[string][]leftOut{},
		states:  make([]templateState, len(e.templates)),
		watched: map[string]dep.Dependency{},
		log:     e.log,
		done:    make(chan struct{}),
		quiet:   make(chan struct{}),
	}
	for _, t := range e.templates {
		if t.cfg.RawConsulData && s.raw == nil {
			s.raw = cttemplate.NewBrain()
		} else if !t.cfg.RawConsulData && s.screened == nil {
			s.screened = cttemplate.NewBrain()
		}
	}
	go s.drainServerErrors()
	return s
}

// brain is the data t reads.
func (s *session) brain(t *loadedTemplate) *cttemplate.Brain {
	if t.cfg.RawConsulData {
		return s.raw
	}
	return s.screened
}

// stop ends every query of the session. Nothing is logged after it returns.
func (s *session) stop() {
	s.watcher.Stop()
	close(s.done)
	<-s.quiet
}

// renderAll executes every template against the brain and starts queries
// for the dependencies they use. It returns every output, in config order,
// or nil while some template still waits for data.
func (s *session) renderAll() ([][]byte, error) {
	outputs := make([][]byte, len(s.e.templates))
	complete := true
	for i, t := range s.e.templates {
		out, ok, err := s.renderOne(t, &s.states[i])
		if err != nil {
			return nil, err
		}
		complete = complete && ok
		outputs[i] = out
	}
	s.unwatchUnused()
	if !complete {
		return nil, nil
	}
	return outputs, nil
}

// renderOne executes t. Once a template has rendered in a Run, it keeps its
// last output while it fails or waits for new dependencies, as
// consul-template leaves its file alone then.
func (s *session) renderOne(t *loadedTemplate, st *templateState) ([]byte, bool, error) {
	res, err := t.ct.Execute(&cttemplate.ExecuteInput{Brain: s.brain(t)})
	if err != nil {
		err = s.e.redact(locate(t.cfg.Source, err))
		if s.once || st.used == nil {
			return nil, false, fmt.Errorf("render: %w", err)
		}
		s.log.Error("template failed; keeping its last output", "template", t.cfg.Source, "err", err.Error())
		return st.output, st.rendered, nil
	}
	if err := s.watch(t, res.Used); err != nil {
		return nil, false, err
	}
	st.used, st.missing = res.Used, res.Missing
	if res.Missing.Len() > 0 {
		if s.once {
			return nil, false, nil
		}
		return st.output, st.rendered, nil
	}
	st.output, st.rendered = res.Output, true
	return res.Output, true, nil
}

// watch starts a query for each dependency in used that has none yet.
func (s *session) watch(t *loadedTemplate, used *dep.Set) error {
	if err := checkSupported(t.cfg.Source, used); err != nil {
		return err
	}
	for _, d := range used.List() {
		if _, ok := s.watched[d.String()]; ok {
			continue
		}
		if _, err := s.watcher.Add(d); err != nil {
			return fmt.Errorf("watch %s: %w", d, err)
		}
		s.watched[d.String()] = d
	}
	return nil
}

// unwatchUnused stops the queries no template uses any more, and forgets their data.
func (s *session) unwatchUnused() {
	used := map[string]bool{}
	for _, st := range s.states {
		if st.used == nil {
			continue
		}
		for _, d := range st.used.List() {
			used[d.String()] = true
		}
	}
	for key, d := range s.watched {
		if !used[key] {
			s.watcher.Remove(d)
			for _, b := range []*cttemplate.Brain{s.screened, s.raw} {
				if b != nil {
					b.Forget(d)
				}
			}
			delete(s.watched, key)
			delete(s.leftOut, key)
		}
	}
}

// wait blocks until new data arrives, then stores it and any other data
// already queued. It returns ctx's error when ctx ends first.
func (s *session) wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case v := <-s.watcher.DataCh():
		s.remember(v)
		s.rememberQueued()
		return nil
	case err := <-s.watcher.ErrCh():
		return fmt.Errorf("watch consul at %s: %w", s.e.address, s.e.redact(err))
	}
}

// rememberQueued stores every view already waiting in the data channel, so
// a burst of changes renders once.
func (s *session) rememberQueued() {
	for {
		select {
		case v := <-s.watcher.DataCh():
			s.remember(v)
		default:
			return
		}
	}
}

// remember stores a view's data, unless its query was stopped meanwhile:
// as it is for raw templates, screened for the others.
func (s *session) remember(v *watch.View) {
	d, data := v.Dependency(), v.Data()
	if _, ok := s.watched[d.String()]; !ok {
		return
	}
	if s.raw != nil {
		s.raw.Remember(d, data)
	}
	if s.screened != nil {
		kept, out := screen(d, data)
		s.logLeftOut(d, out)
		s.screened.Remember(d, kept)
	}
}

// logLeftOut logs what screening left out of d's data, each only the first
// time in a row it occurs (not again on every change of d's data).
func (s *session) logLeftOut(d dep.Dependency, out []leftOut) {
	before := s.leftOut[d.String()]
	for _, l := range out {
		if !slices.Contains(before, l) {
			s.log.Warn("left out of what templates see", "query", d.String(), l.kind, l.id, "why", l.why)
		}
	}
	s.leftOut[d.String()] = out
}

// drainServerErrors logs each failed Consul query (the view retries it
// itself, with s.e.backoff) until the session stops, then drains quietly.
func (s *session) drainServerErrors() {
	errs := s.watcher.ServerErrCh()
	for {
		select {
		case err := <-errs:
			err = s.e.redact(err)
			s.mu.Lock()
			s.lastError = err
			s.mu.Unlock()
			// err.Error(), not err: slog prints pkg/errors values with %+v, stack and all.
			s.log.Warn("consul query failed; retrying with backoff", "consul", s.e.address, "err", err.Error())
		case <-s.done:
			close(s.quiet)
			drainFor(errs, drainAfterStop)
			return
		}
	}
}

// drainFor reads and drops values from ch until d has passed.
func drainFor(ch <-chan error, d time.Duration) {
	timeout := time.NewTimer(d)
	defer timeout.Stop()
	for {
		select {
		case <-ch:
		case <-timeout.C:
			return
		}
	}
}

func (s *session) lastConsulError() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastError
}

// missingList names the dependencies still without data, for error messages.
func (s *session) missingList() string {
	var names []string
	for _, st := range s.states {
		if st.missing == nil {
			continue
		}
		for _, d := range st.missing.List() {
			names = append(names, d.String())
		}
	}
	slices.Sort(names)
	names = slices.Compact(names)
	if len(names) == 0 {
		return "the first render"
	}
	return strings.Join(names, ", ")
}
