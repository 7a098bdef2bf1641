// Command lbctl-bench-reload measures "Consul change → nginx serving the new
// upstream" for lbctl's pipeline, built by package lb as `lbctl run` builds
// it (catalog watch → built-in render following splits → reload controller →
// drain publisher), for the same pipeline with live upstreams (instance
// changes pushed to nginx's Lua balancer, no reload), and for
// consul-template driving an identical nginx with `nginx -s reload`, all in
// the same run, and prints p50/p90/p99, where lbctl's time goes, what one
// probe call costs, and the nginx workers' memory with and without the Lua
// module.
//
// Each round re-registers one Consul service instance with the port of the
// other of two greeter backends (a single catalog write), then probes the
// nginx serving it on fresh connections until the new backend answers.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/lbctl/lbctl/internal/percentile"
	"github.com/lbctl/lbctl/internal/testrig"
)

type benchOptions struct {
	rounds         int
	consulTemplate string
	timeout        time.Duration
	verbose        bool
	gap            time.Duration
	window         time.Duration
	waitMin        time.Duration
	liveWorkers    int
}

func main() {
	o := benchOptions{}
	flag.IntVar(&o.rounds, "rounds", 50, "Consul changes to measure")
	flag.StringVar(&o.consulTemplate, "consul-template", testrig.ConsulTemplatePath(),
		"consul-template v"+testrig.ConsulTemplateVersion+" binary")
	flag.DurationVar(&o.timeout, "timeout", 10*time.Second, "give up on a round after this long")
	flag.DurationVar(&o.gap, "gap", 600*time.Millisecond, "pause between rounds (more than lbctl's wait.between_reloads, so each round is one change on a quiet load balancer)")
	flag.DurationVar(&o.window, "window", 250*time.Millisecond, "keep probing this long after the new backend first answers")
	flag.DurationVar(&o.waitMin, "wait-min", 0, "lbctl's wait.min (0: the config default)")
	flag.IntVar(&o.liveWorkers, "live-workers", 2, "worker_processes of the live-mode nginx (the shipped config's auto on 2 CPUs)")
	flag.BoolVar(&o.verbose, "v", false, "log lbctl's reload lines")
	child := flag.String("child", "", "internal: run one lbctl pipeline with these JSON arguments")
	flag.Parse()
	if *child != "" {
		var a childArgs
		if err := json.Unmarshal([]byte(*child), &a); err != nil {
			fmt.Fprintln(os.Stderr, "lbctl-bench-reload: -child:", err)
			os.Exit(2)
		}
		runChild(a)
		return
	}
	if err := run(o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "lbctl-bench-reload:", err)
		os.Exit(1)
	}
}

func run(o benchOptions, out io.Writer) (err error) {
	tb, err := testrig.NewProgramTB()
	if err != nil {
		return err
	}
	defer tb.Close()
	defer testrig.Catch(&err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	env, err := setUp(ctx, tb, o)
	if err != nil {
		return err
	}
	load := [2]string{loadAverage()}
	lat, err := measure(ctx, env, o)
	if err != nil {
		return err
	}
	load[1] = loadAverage()
	printTable(out, o, lat, load)
	return printMemory(out, env)
}

// latencies are the per-round results of each pipeline, and when a bare
// blocking query on the live service (the one lbctl makes, beside it) was
// answered the change: Consul's own share, which no pipeline can beat.
type latencies struct {
	lbctl, live, consulTemplate rounds
	consul                      []time.Duration
}

// rounds holds, per round, when the new backend first answered a fresh
// connection, and from when on every fresh connection got it; for lbctl's
// pipelines also the steps in between, and for every pipeline how long each
// probe call took.
type rounds struct {
	first, all []time.Duration
	written    []time.Duration // when the round's Consul write returned
	steps      []steps
	calls      []time.Duration
}

// steps are the times from the start of a round (just before the Consul
// write) to each point an lbctl pipeline passed.
type steps struct {
	written  time.Duration // the catalog write returned
	rendered time.Duration // the blocking query returned and the template ran (render.Update.Seen)
	applied  time.Duration // OnApplied: reload confirmed, or push read back and seed file written
	first    time.Duration // the first call on the new backend answered
}

// measure runs the rounds. Each round is two Consul writes, one after the
// other: the first moves "greeter", served by lbctl (reload mode) and
// consul-template, probed side by side as they always were; the second
// moves "greeter-live", served by lbctl in live mode, probed alone. The
// three pipelines so see the same machine, round after round, and a
// pipeline finishing in milliseconds is not measured under the other two's
// reloads and probes.
func measure(ctx context.Context, env *benchEnv, o benchOptions) (latencies, error) {
	var lat latencies
	for i := range o.rounds {
		next := env.backends[(i+1)%2]
		start := time.Now()
		if err := env.point(env.lbctl.service, next); err != nil {
			return lat, err
		}
		written := time.Since(start)
		lc, cc := make(chan probeResult, 1), make(chan probeResult, 1)
		go func() { lc <- probe(ctx, env.lbctl.addr, next.Instance, start, o) }()
		go func() { cc <- probe(ctx, env.ctAddr, next.Instance, start, o) }()
		l, c := <-lc, <-cc
		if l.err != nil {
			return lat, fmt.Errorf("round %d, lbctl: %w", i, l.err)
		}
		if c.err != nil {
			return lat, fmt.Errorf("round %d, consul-template: %w", i, c.err)
		}
		lat.lbctl.add(l, written, env.lbctl.stepsOf(start, written, l))
		lat.consulTemplate.add(c, written, steps{})
		env.settle(o.gap)

		answered := env.watch(ctx, env.live.service, next)
		start = time.Now()
		if err := env.point(env.live.service, next); err != nil {
			return lat, err
		}
		written = time.Since(start)
		v := probe(ctx, env.live.addr, next.Instance, start, o)
		if v.err != nil {
			return lat, fmt.Errorf("round %d, lbctl live: %w", i, v.err)
		}
		at, err := waitAnswer(answered, o.timeout)
		if err != nil {
			return lat, fmt.Errorf("round %d, the bare blocking query: %w", i, err)
		}
		lat.consul = append(lat.consul, at.Sub(start))
		lat.live.add(v, written, env.live.stepsOf(start, written, v))
		if o.verbose {
			fmt.Fprintf(os.Stderr, "round %d: lbctl %s/%s live %s/%s consul-template %s/%s (first/all)\n", i,
				ms(l.first), ms(l.all), ms(v.first), ms(v.all), ms(c.first), ms(c.all))
		}
		env.settle(o.gap)
	}
	return lat, nil
}

// stepsOf is where the round that started at start went, from what the
// pipeline's OnApplied recorded; zero when the update it holds is older
// than the round (then the step is left out of the breakdown).
func (p *pipeline) stepsOf(start time.Time, written time.Duration, r probeResult) steps {
	a := p.applied.Load()
	if a == nil || a.seen.Before(start) {
		return steps{}
	}
	return steps{written: written, rendered: a.seen.Sub(start), applied: a.applied.Sub(start), first: r.first}
}

type probeResult struct {
	first, all time.Duration
	calls      []time.Duration // how long each call took, dial included
	err        error
}

func (r *rounds) add(p probeResult, written time.Duration, s steps) {
	r.first = append(r.first, p.first)
	r.all = append(r.all, p.all)
	r.written = append(r.written, written)
	r.calls = append(r.calls, p.calls...)
	if s.applied > 0 {
		r.steps = append(r.steps, s)
	}
}

// probe calls addr on a fresh connection each time, one call after the
// other, from start until window after the new instance first answered.
// first is when the new instance first answered. all is the start of the
// first call of the unbroken run of calls that got the new instance and
// ended the round: from then on every call the probe started went to the
// new set. Both are within one call of when nginx switched (the probe's
// p50 call is printed): a call is routed after its dial and handshake,
// and answers after that.
func probe(ctx context.Context, addr, instance string, start time.Time, o benchOptions) probeResult {
	var firstAt, runStart time.Time
	var calls []time.Duration
	deadline := start.Add(o.timeout)
	for time.Now().Before(deadline) {
		callStart := time.Now()
		got, err := testrig.CallInstance(ctx, addr)
		calls = append(calls, time.Since(callStart))
		switch {
		case err != nil:
			return probeResult{err: fmt.Errorf("probe %s: %w", addr, err)}
		case got != instance:
			runStart = time.Time{}
			continue
		case runStart.IsZero():
			runStart = callStart
		}
		if firstAt.IsZero() {
			firstAt = time.Now()
		}
		if time.Since(firstAt) > o.window {
			return probeResult{first: firstAt.Sub(start), all: runStart.Sub(start), calls: calls}
		}
	}
	return probeResult{err: fmt.Errorf("%s did not answer at %s within %s", instance, addr, o.timeout)}
}

const (
	lbctlName = "lbctl (nginx -t, swap, SIGHUP, confirm)"
	liveName  = "lbctl live (push, read back)"
	// consulName is the bare blocking query beside live mode's watcher.
	consulName = "Consul alone: a bare blocking query (live's service)"
)

func printTable(w io.Writer, o benchOptions, lat latencies, load [2]string) {
	fmt.Fprintf(w, "Consul change -> nginx serving the new upstream, %d rounds (%s, %s, %s)\n", o.rounds, machine(), nginxVersion(), runtime.Version())
	fmt.Fprintf(w, "load average (1, 5, 15 min) before: %s, after: %s\n\n", load[0], load[1])
	fmt.Fprintf(w, "| %-54s | %-26s | %8s | %8s | %8s | %8s |\n", "pipeline", "measured", "p50", "p90", "p99", "max")
	fmt.Fprintf(w, "|%s|%s|%s|%s|%s|%s|\n", dash(56), dash(28), dash(10), dash(10), dash(10), dash(10))
	ct := "consul-template v" + testrig.ConsulTemplateVersion + " + nginx -s reload"
	live := fmt.Sprintf("%s, %d workers", liveName, o.liveWorkers)
	row(w, lbctlName, "every new call on new", lat.lbctl.all)
	row(w, live, "every new call on new", lat.live.all)
	row(w, ct, "every new call on new", lat.consulTemplate.all)
	row(w, lbctlName, "first call on new", lat.lbctl.first)
	row(w, live, "first call on new", lat.live.first)
	row(w, ct, "first call on new", lat.consulTemplate.first)
	row(w, consulName, "answered the change", lat.consul)

	fmt.Fprintf(w, "\nthe same, from when the Consul write returned (the change is in the catalog; the write itself took %s / %s p50 / p99):\n\n",
		ms(pct(lat.live.written, 50)), ms(pct(lat.live.written, 99)))
	fmt.Fprintf(w, "| %-54s | %-26s | %8s | %8s | %8s | %8s |\n", "pipeline", "measured", "p50", "p90", "p99", "max")
	fmt.Fprintf(w, "|%s|%s|%s|%s|%s|%s|\n", dash(56), dash(28), dash(10), dash(10), dash(10), dash(10))
	row(w, lbctlName, "every new call on new", minus(lat.lbctl.all, lat.lbctl.written))
	row(w, live, "every new call on new", minus(lat.live.all, lat.live.written))
	row(w, ct, "every new call on new", minus(lat.consulTemplate.all, lat.consulTemplate.written))
	row(w, consulName, "answered the change", minus(lat.consul, lat.live.written))
	fmt.Fprintf(w, "\nevery new call on the new upstream: lbctl is %.1fx faster than consul-template at p50, %.1fx at p99; live %.1fx, %.1fx\n",
		ratio(lat.consulTemplate.all, lat.lbctl.all, 50), ratio(lat.consulTemplate.all, lat.lbctl.all, 99),
		ratio(lat.consulTemplate.all, lat.live.all, 50), ratio(lat.consulTemplate.all, lat.live.all, 99))
	fmt.Fprintf(w, "first call on the new upstream:     lbctl is %.1fx faster than consul-template at p50, %.1fx at p99; live %.1fx, %.1fx\n",
		ratio(lat.consulTemplate.first, lat.lbctl.first, 50), ratio(lat.consulTemplate.first, lat.lbctl.first, 99),
		ratio(lat.consulTemplate.first, lat.live.first, 50), ratio(lat.consulTemplate.first, lat.live.first, 99))

	fmt.Fprintf(w, "\nwhere lbctl's time goes, from just before the Consul write (p50 / p99 of the rounds):\n\n")
	fmt.Fprintf(w, "| %-54s | %-19s | %-19s | %-19s | %-19s |\n", "pipeline", "write returned", "rendered", "applied (OnApplied)", "first call on new")
	fmt.Fprintf(w, "|%s|%s|%s|%s|%s|\n", dash(56), dash(21), dash(21), dash(21), dash(21))
	stepRow(w, lbctlName, lat.lbctl.steps)
	stepRow(w, live, lat.live.steps)

	fmt.Fprintf(w, "\nthe probe: one call on a fresh connection (dial, HTTP/2 handshake, SayHello), p50 / p99 / max:\n")
	for _, p := range []struct {
		name string
		r    rounds
	}{{lbctlName, lat.lbctl}, {live, lat.live}, {ct, lat.consulTemplate}} {
		fmt.Fprintf(w, "- %s: %s / %s / %s over %d calls\n", p.name, ms(pct(p.r.calls, 50)), ms(pct(p.r.calls, 99)), ms(slices.Max(p.r.calls)), len(p.r.calls))
	}
}

func stepRow(w io.Writer, name string, s []steps) {
	if len(s) == 0 {
		fmt.Fprintf(w, "| %-54s | %-19s | %-19s | %-19s | %-19s |\n", name, "-", "-", "-", "-")
		return
	}
	col := func(f func(steps) time.Duration) string {
		var d []time.Duration
		for _, x := range s {
			d = append(d, f(x))
		}
		return ms(pct(d, 50)) + " / " + ms(pct(d, 99))
	}
	fmt.Fprintf(w, "| %-54s | %-19s | %-19s | %-19s | %-19s |\n", name,
		col(func(x steps) time.Duration { return x.written }), col(func(x steps) time.Duration { return x.rendered }),
		col(func(x steps) time.Duration { return x.applied }), col(func(x steps) time.Duration { return x.first }))
}

// minus is a[i] - b[i], round by round.
func minus(a, b []time.Duration) []time.Duration {
	out := make([]time.Duration, len(a))
	for i := range a {
		out[i] = a[i] - b[i]
	}
	return out
}

func ratio(a, b []time.Duration, p int) float64 { return float64(pct(a, p)) / float64(pct(b, p)) }

func row(w io.Writer, name, what string, d []time.Duration) {
	fmt.Fprintf(w, "| %-54s | %-26s | %8s | %8s | %8s | %8s |\n", name, what, ms(pct(d, 50)), ms(pct(d, 90)), ms(pct(d, 99)),
		ms(slices.Max(d)))
}

func dash(n int) string { return strings.Repeat("-", n) }

var (
	ms  = percentile.Ms
	pct = percentile.Of
)

// machine is the CPU count and model.
func machine() string {
	model := ""
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = ", " + strings.TrimSpace(v)
				break
			}
		}
	}
	return fmt.Sprintf("nproc %d%s", runtime.NumCPU(), model)
}

// loadAverage is /proc/loadavg's first three fields.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "?"
}

func nginxVersion() string {
	out, _ := exec.Command("nginx", "-v").CombinedOutput()
	return strings.TrimPrefix(strings.TrimSpace(string(out)), "nginx version: ")
}
