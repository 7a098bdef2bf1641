package render

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/lbctl/lbctl/catalog"
	"github.com/lbctl/lbctl/config"
	"github.com/lbctl/lbctl/internal/latest"
	"github.com/lbctl/lbctl/internal/trafficsplit"
	"github.com/lbctl/lbctl/live"
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
	splits   SplitSource      // nil unless following shifts
	builtin  *BuiltinRenderer
	log      *slog.Logger
}

// SplitSource is the traffic splits recorded in Consul KV, by service;
// shift.Watcher implements it.
type SplitSource interface {
	Run(ctx context.Context, out chan map[string]trafficsplit.Split) error
	Once(ctx context.Context) (map[string]trafficsplit.Split, error)
}

// FollowSplits makes services configured with shift: true render the splits
// src reports (lbctl shift). Call it before Once or Run; it does nothing when
// no service follows shifts. Until src first answers, nothing is rendered:
// an LB must not serve the wrong version while it starts.
func (e *Engine) FollowSplits(src SplitSource) {
	if slices.ContainsFunc(e.services, func(s config.Service) bool { return s.Shift }) {
		e.splits = src
	}
}

// NewEngine renders cfg's services with watcher's data into
// cfg.Nginx.ServicesConf, and cfg's templates with tmpl. Either may be nil
// when the config has no services or no templates.
func NewEngine(cfg *config.Config, watcher *catalog.Watcher, tmpl Templates, resolve Resolver, log *slog.Logger) *Engine {
	builtin := NewBuiltinRenderer(resolve)
	if target := LiveOf(cfg.Nginx); target != nil {
		builtin = NewLiveRenderer(resolve, *target)
	}
	e := &Engine{services: cfg.Services, dest: cfg.Nginx.ServicesConf, tmpl: tmpl, builtin: builtin, log: log.With("component", "render")}
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

// LiveConfig is, in live mode with no consul-template templates, the file
// Once will render: its bytes depend on neither the instances nor the
// splits (TestLiveConfigHoldsNoInstance), so it can be validated before
// Consul answers. ok is false in reload mode or with templates. It must not
// run concurrently with Once or Run.
func (e *Engine) LiveConfig() (f File, ok bool) {
	if e.builtin.live == nil || e.watcher == nil || e.tmpl != nil {
		return File{}, false
	}
	data, _, _ := e.builtin.RenderLive(e.services, catalog.Snapshot{}, nil)
	return e.builtinFile(data), true
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
		var splits map[string]trafficsplit.Split
		if e.splits != nil {
			if splits, err = e.splits.Once(ctx); err != nil {
				return Update{}, err
			}
		}
		f, set := e.renderBuiltin(snap, splits, nil)
		u.Files, u.Live = append(u.Files, f), set
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
	splits := make(chan map[string]trafficsplit.Split, 1)
	errs := make(chan error, 3)
	if e.watcher != nil {
		go func() { errs <- e.watcher.Run(ctx, snaps) }()
	}
	if e.splits != nil && e.watcher != nil {
		go func() { errs <- e.splits.Run(ctx, splits) }()
	}
	if e.tmpl != nil {
		go func() { errs <- e.tmpl.Run(ctx, func(f []File) { latest.Send(ctx, tmplFiles, f) }) }()
	}
	return e.loop(ctx, sources{snaps, tmplFiles, splits, errs}, out)
}

// sources are the channels the Run loop reads.
type sources struct {
	snaps     chan catalog.Snapshot
	tmplFiles chan []File
	splits    chan map[string]trafficsplit.Split
	errs      chan error
}

// renderState is what the Run loop knows of each source.
type renderState struct {
	builtin     *File
	live        live.Set
	prevSnap    *catalog.Snapshot
	index       uint64
	indexes     map[catalog.Query]uint64
	changes     []string
	tmpl        []File
	haveTmpl    bool
	splits      map[string]trafficsplit.Split
	haveSplits  bool
	lastProblem map[string]bool
}

func (e *Engine) loop(ctx context.Context, src sources, out chan Update) error {
	st := &renderState{lastProblem: map[string]bool{}}
	for {
		rerender := false
		select {
		case <-ctx.Done():
			return nil
		case err := <-src.errs:
			if ctx.Err() != nil {
				return nil
			}
			return err
		case snap := <-src.snaps:
			st.changes = append(st.changes, e.describeChanges(st.prevSnap, snap)...)
			st.prevSnap, st.index, st.indexes = &snap, snap.Index, snap.Indexes
			rerender = true
		case splits := <-src.splits:
			st.changes = append(st.changes, describeSplits(st.splits, splits)...)
			st.splits, st.haveSplits, rerender = splits, true, true
		case files := <-src.tmplFiles:
			st.tmpl, st.haveTmpl = files, true
			st.changes = append(st.changes, "templates re-rendered")
		}
		if rerender && st.prevSnap != nil && (e.splits == nil || st.haveSplits) {
			f, set := e.renderBuiltin(*st.prevSnap, st.splits, st.lastProblem)
			st.builtin, st.live = &f, set
		}
		if (e.watcher != nil && st.builtin == nil) || (e.tmpl != nil && !st.haveTmpl) {
			continue
		}
		u := Update{Seen: time.Now(), Index: st.index, Indexes: st.indexes, Changes: st.changes, Live: st.live}
		if st.builtin != nil {
			u.Files = append(u.Files, *st.builtin)
		}
		u.Files = append(u.Files, st.tmpl...)
		latest.Send(ctx, out, u)
		st.changes = nil
	}
}

// renderBuiltin renders the built-in template and logs what was left out and
// which services have no passing instance; with seen, each is logged only the
// first time in a row it occurs, not on every render.
func (e *Engine) renderBuiltin(snap catalog.Snapshot, splits map[string]trafficsplit.Split, seen map[string]bool) (File, live.Set) {
	data, set, problems := e.builtin.RenderLive(e.services, snap, splits)
	now := map[string]bool{}
	firstTime := func(key string) bool {
		now[key] = true
		return seen == nil || !seen[key]
	}
	for _, p := range problems {
		if firstTime(p.String()) {
			e.log.Warn("left out of the nginx config", "service", p.Service, "service_id", p.InstanceID, "why", p.Reason)
		}
	}
	for _, s := range e.services {
		if len(snap.Instances[QueryOf(s)]) > 0 {
			continue
		}
		if q := QueryOf(s).String(); firstTime("empty " + q) {
			e.log.Warn("no passing instances: nginx answers its calls UNAVAILABLE", "service", q)
		}
	}
	if seen != nil {
		clear(seen)
		maps.Copy(seen, now)
	}
	return e.builtinFile(data), set
}

// builtinFile is the built-in template's file holding data.
func (e *Engine) builtinFile(data []byte) File {
	return File{Path: e.dest, Data: data, Perms: 0o644, Source: "builtin"}
}

// describeChanges lists instances added and removed per query, for the reload
// log line. Only the queries whose instances differ are described: one change
// among thousands of services costs one diff, not thousands.
func (e *Engine) describeChanges(prev *catalog.Snapshot, next catalog.Snapshot) []string {
	var changed []catalog.Query
	for q, after := range next.Instances {
		if prev == nil || !catalog.Equal(prev.Instances[q], after) {
			changed = append(changed, q)
		}
	}
	slices.SortFunc(changed, compareQueries)
	var changes []string
	for _, q := range changed {
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
	return strings.Compare(a.String(), b.String())
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

// describeSplits lists the splits that changed, for the reload log line.
func describeSplits(before, after map[string]trafficsplit.Split) []string {
	var changes []string
	for _, svc := range slices.Sorted(maps.Keys(after)) {
		b, had := before[svc]
		a := after[svc]
		if !had || b.String() != a.String() {
			changes = append(changes, fmt.Sprintf("shift %s: %s", svc, a))
		}
	}
	for _, svc := range slices.Sorted(maps.Keys(before)) {
		if _, ok := after[svc]; !ok {
			changes = append(changes, fmt.Sprintf("shift %s: removed", svc))
		}
	}
	return changes
}
