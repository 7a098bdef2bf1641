package render

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/lbctl/lbctl/catalog"
	"github.com/lbctl/lbctl/config"
	"github.com/lbctl/lbctl/internal/latest"
)

// Templates renders consul-template templates; render/consultemplate
// implements it. It is an interface here only to keep the import one way.
type Templates interface {
	Run(ctx context.Context, emit func([]File)) error
	Once(ctx context.Context) ([]File, error)
}

// Engine renders every configured destination: the built-in template for the
// configured services, and the consul-template templates.
type Engine struct {
	services []config.Service
	dest     string
	watcher  *catalog.Watcher // nil without services
	tmpl     Templates        // nil without templates
	builtin  *BuiltinRenderer
	log      *slog.Logger
}

// NewEngine renders cfg's services with watcher's data into
// cfg.Nginx.ServicesConf, and cfg's templates with tmpl. Either may be nil
// when the config has no services or no templates.
func NewEngine(cfg *config.Config, watcher *catalog.Watcher, tmpl Templates, resolve Resolver, log *slog.Logger) *Engine {
	e := &Engine{services: cfg.Services, dest: cfg.Nginx.ServicesConf, tmpl: tmpl, builtin: NewBuiltinRenderer(resolve), log: log.With("component", "render")}
	if len(cfg.Services) > 0 {
		e.watcher = watcher
	}
	return e
}

// Queries are the Consul health queries the built-in template needs.
func Queries(services []config.Service) []catalog.Query {
	qs := make([]catalog.Query, 0, len(services))
	for _, s := range services {
		qs = append(qs, QueryOf(s))
	}
	return qs
}

// Once renders every destination once. It fails, rather than render "no
// instances", when Consul does not answer before ctx ends.
func (e *Engine) Once(ctx context.Context) (Update, error) {
	u := Update{Seen: time.Now()}
	if e.watcher != nil {
		snap, err := e.watcher.Once(ctx)
		if err != nil {
			return Update{}, err
		}
		u.Files = append(u.Files, e.renderBuiltin(snap, nil))
		u.Index, u.Indexes = snap.Index, snap.Indexes
	}
	if e.tmpl != nil {
		files, err := e.tmpl.Once(ctx)
		if err != nil {
			return Update{}, err
		}
		u.Files = append(u.Files, files...)
	}
	return u, nil
}

// Run sends an Update on out after every change, once every source has
// rendered. out should have capacity 1: a slow reader then only skips
// intermediate states and always gets the newest.
func (e *Engine) Run(ctx context.Context, out chan Update) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	snaps := make(chan catalog.Snapshot, 1)
	tmplFiles := make(chan []File, 1)
	errs := make(chan error, 2)
	if e.watcher != nil {
		go func() { errs <- e.watcher.Run(ctx, snaps) }()
	}
	if e.tmpl != nil {
		go func() { errs <- e.tmpl.Run(ctx, func(f []File) { latest.Send(ctx, tmplFiles, f) }) }()
	}
	return e.loop(ctx, snaps, tmplFiles, errs, out)
}

// renderState is what the Run loop knows of each source.
type renderState struct {
	builtin     *File
	prevSnap    *catalog.Snapshot
	index       uint64
	indexes     map[catalog.Query]uint64
	changes     []string
	tmpl        []File
	haveTmpl    bool
	lastProblem map[string]bool
}

func (e *Engine) loop(ctx context.Context, snaps chan catalog.Snapshot, tmplFiles chan []File, errs chan error, out chan Update) error {
	st := &renderState{lastProblem: map[string]bool{}}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errs:
			if ctx.Err() != nil {
				return nil
			}
			return err
		case snap := <-snaps:
			st.changes = e.describeChanges(st.prevSnap, snap)
			f := e.renderBuiltin(snap, st.lastProblem)
			st.builtin, st.prevSnap, st.index, st.indexes = &f, &snap, snap.Index, snap.Indexes
		case files := <-tmplFiles:
			st.tmpl, st.haveTmpl = files, true
			st.changes = append(st.changes, "templates re-rendered")
		}
		if (e.watcher != nil && st.builtin == nil) || (e.tmpl != nil && !st.haveTmpl) {
			continue
		}
		u := Update{Seen: time.Now(), Index: st.index, Indexes: st.indexes, Changes: st.changes}
		if st.builtin != nil {
			u.Files = append(u.Files, *st.builtin)
		}
		u.Files = append(u.Files, st.tmpl...)
		latest.Send(ctx, out, u)
		st.changes = nil
	}
}

// renderBuiltin renders the built-in template and logs what was left out;
// with seen, a problem is logged only the first time in a row it occurs.
func (e *Engine) renderBuiltin(snap catalog.Snapshot, seen map[string]bool) File {
	data, problems := e.builtin.Render(e.services, snap)
	now := map[string]bool{}
	for _, p := range problems {
		now[p.String()] = true
		if seen == nil || !seen[p.String()] {
			e.log.Warn("left out of the nginx config", "service", p.Service, "service_id", p.InstanceID, "why", p.Reason)
		}
	}
	if seen != nil {
		clear(seen)
		maps.Copy(seen, now)
	}
	for _, s := range e.services {
		if len(snap.Instances[QueryOf(s)]) == 0 {
			e.log.Warn("no passing instances: nginx answers its calls UNAVAILABLE", "service", QueryOf(s).String())
		}
	}
	return File{Path: e.dest, Data: data, Perms: 0o644, Source: "builtin"}
}

// describeChanges lists instances added and removed per query, for the reload log line.
func (e *Engine) describeChanges(prev *catalog.Snapshot, next catalog.Snapshot) []string {
	var changes []string
	for _, q := range slices.SortedFunc(maps.Keys(next.Instances), compareQueries) {
		var before []catalog.Instance
		if prev != nil {
			before = prev.Instances[q]
		}
		added, removed := diffInstances(before, next.Instances[q])
		for _, a := range added {
			changes = append(changes, fmt.Sprintf("%s: +%s", q, a))
		}
		for _, r := range removed {
			changes = append(changes, fmt.Sprintf("%s: -%s", q, r))
		}
	}
	return changes
}

func compareQueries(a, b catalog.Query) int {
	if a.String() < b.String() {
		return -1
	}
	if a.String() > b.String() {
		return 1
	}
	return 0
}

func diffInstances(before, after []catalog.Instance) (added, removed []string) {
	key := func(i catalog.Instance) string { return fmt.Sprintf("%s:%d (%s)", i.Address, i.Port, i.ID) }
	had := map[string]bool{}
	for _, i := range before {
		had[key(i)] = true
	}
	has := map[string]bool{}
	for _, i := range after {
		has[key(i)] = true
		if !had[key(i)] {
			added = append(added, key(i))
		}
	}
	for _, i := range before {
		if !has[key(i)] {
			removed = append(removed, key(i))
		}
	}
	return added, removed
}
