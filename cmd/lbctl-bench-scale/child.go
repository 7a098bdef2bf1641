package main

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"time"

	"github.com/lbctl/lbctl/catalog"
	"github.com/lbctl/lbctl/catalog/catalogtest"
	"github.com/lbctl/lbctl/config"
	"github.com/lbctl/lbctl/internal/jsonlines"
	"github.com/lbctl/lbctl/internal/procmem"
	"github.com/lbctl/lbctl/internal/testrig"
	"github.com/lbctl/lbctl/lb"
	"github.com/lbctl/lbctl/lb/lbtest"
	"github.com/lbctl/lbctl/render"
)

// childArgs is what the parent tells the lbctl side (a process of its own, so
// its memory and connections are lbctl's alone).
type childArgs struct {
	Consul   string
	Services int
	Live     bool
	Log      bool // lbctl's log on stderr (info), for a breakdown of where time goes
}

// message is one line the child writes on stdout.
type message struct {
	Event         string            `json:"event"` // ready, applied, stats, error
	FirstRenderMS float64           `json:"first_render_ms,omitempty"`
	Phases        phases            `json:"phases,omitzero"`
	At            int64             `json:"at,omitempty"`      // applied: Unix ns
	Seen          int64             `json:"seen,omitempty"`    // applied: when the engine rendered it (Update.Seen), Unix ns
	Changed       map[string]uint64 `json:"changed,omitempty"` // applied: services whose index moved, and their answer's index
	Requests      int64             `json:"requests,omitempty"`
	RateLimited   int64             `json:"rate_limited,omitempty"` // answers 429 so far
	Conns         int64             `json:"conns,omitempty"`
	MaxConns      int64             `json:"max_conns,omitempty"`
	AnonKB        int               `json:"anon_kb,omitempty"`
	RSSKB         int               `json:"rss_kb,omitempty"`
	Err           string            `json:"err,omitempty"`
}

// runChild builds the pipeline through package lb as `lbctl run` does (its
// Consul client is consulclient.New's: the same longpoll transport, with a
// counting dialer and round tripper around it), starts nginx on the first
// render, reports every applied update, and answers "stats" on stdin.
func runChild(a childArgs) {
	out := jsonlines.NewWriter(os.Stdout)
	say := func(m message) { out.Write(m) }
	if err := child(a, say); err != nil {
		say(message{Event: "error", Err: err.Error()})
	}
}

// child is runChild's work; a testrig Fatal (a first render that failed,
// say) is its error. Any other panic prints its stack and is the error.
func child(a childArgs, say func(message)) (err error) {
	b, err := testrig.NewProgramTB()
	if err != nil {
		return err
	}
	defer b.Close()
	defer func() {
		if r := recover(); r != nil {
			if f, ok := r.(testrig.Fatal); ok {
				err = f
				return
			}
			os.Stderr.Write(debug.Stack())
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	var c catalogtest.Counter
	client, err := c.Client(a.Consul)
	if err != nil {
		return err
	}
	n := testrig.NewNginx(b)
	if a.Live {
		n = testrig.NewNginxWith(b, testrig.NginxOptions{Lua: true, Workers: 2})
	}
	cfg := &config.Config{LBID: "bench-scale",
		Nginx: config.Nginx{Binary: n.Bin, Config: n.MainConf, Prefix: n.Dir, PIDFile: n.PIDFile,
			ServicesConf: filepath.Join(n.ConfD, "lbctl.conf"), LiveUpstreams: a.Live, LiveDir: filepath.Join(n.Dir, "live")}}
	for i := range a.Services {
		cfg.Services = append(cfg.Services, config.Service{Name: serviceName(i), Listen: testrig.LoopbackAddr(testrig.FreePort(b))})
	}
	cfg.Consul.Address = a.Consul
	cfg.SetDefaults()
	var prev map[catalog.Query]uint64
	var pmu sync.Mutex
	onApplied := func(u render.Update) {
		at := time.Now().UnixNano()
		pmu.Lock()
		changed := map[string]uint64{}
		if prev != nil {
			for q, idx := range u.Indexes {
				if prev[q] != idx {
					changed[q.Service] = idx
				}
			}
		}
		prev = u.Indexes
		pmu.Unlock()
		if len(changed) > 0 {
			say(message{Event: "applied", At: at, Seen: u.Seen.UnixNano(), Changed: changed})
		}
	}
	start := time.Now()
	log := slog.New(slog.DiscardHandler)
	if a.Log {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	l, err := lb.New(cfg, lb.Options{Consul: client, Log: log, OnApplied: onApplied})
	if err != nil {
		return err
	}
	built := time.Now()
	res, err := l.Start(context.Background()) // lbtest.Run's Start returns this outcome
	if err != nil {
		return fmt.Errorf("first render: %w", err)
	}
	rendered := time.Now()
	lbtest.Run(b, l, n)
	p := phases{New: msOf(built.Sub(start)), Consul: msOf(rendered.Sub(built) - res.Validate - res.Swap),
		Validate: msOf(res.Validate), Nginx: msOf(time.Since(rendered))}
	say(message{Event: "ready", FirstRenderMS: msOf(time.Since(start)), Phases: p})
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		u, _ := procmem.Self()
		say(message{Event: "stats", Requests: c.Requests.Load(), RateLimited: c.RateLimited.Load(), Conns: c.Open.Load(), MaxConns: c.Most.Load(),
			AnonKB: u.Anonymous, RSSKB: u.RSS})
	}
	return nil
}

// phases are where the first render's time went, in ms: lb.New (in live
// mode it runs nginx -t once to see whether nginx has the Lua module), the
// Consul fetch and render (lb.Start but its nginx -t and file swap), nginx -t
// of the first render, and starting nginx on it until it serves.
type phases struct {
	New      float64 `json:"new"`
	Consul   float64 `json:"consul"`
	Validate float64 `json:"validate"`
	Nginx    float64 `json:"nginx"`
}

func (p phases) String() string {
	return fmt.Sprintf("new %.0f + fetch & render %.0f + nginx -t %.0f + nginx start %.0f", p.New, p.Consul, p.Validate, p.Nginx)
}

func msOf(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func serviceName(i int) string { return fmt.Sprintf("svc-%04d", i) }
