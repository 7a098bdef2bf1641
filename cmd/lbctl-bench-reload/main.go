// Command lbctl-bench-reload measures "Consul change → nginx serving the new
// upstream" for lbctl's pipeline, built by package lb as `lbctl run` builds
// it (catalog watch → built-in render following splits → reload controller →
// drain publisher), and for consul-template driving an identical nginx with
// `nginx -s reload`, side by side on the same run, and prints p50/p90/p99.
//
// Each round re-registers one Consul service instance with the port of the
// other of two greeter backends (a single catalog write), then probes both
// nginx instances on fresh connections until the new backend answers.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"

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
	flag.BoolVar(&o.verbose, "v", false, "log lbctl's reload lines")
	flag.Parse()
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
	lat, err := measure(ctx, env, o)
	if err != nil {
		return err
	}
	printTable(out, o, lat)
	return nil
}

// latencies are the per-round results of each pipeline.
type latencies struct {
	lbctl, consulTemplate rounds
}

// rounds holds, per round, when the new backend first answered a fresh
// connection, and from when on every fresh connection got it.
type rounds struct {
	first, all []time.Duration
}

func measure(ctx context.Context, env *benchEnv, o benchOptions) (latencies, error) {
	var lat latencies
	for i := range o.rounds {
		next := env.backends[(i+1)%2]
		start := time.Now()
		if err := env.point(next); err != nil {
			return lat, err
		}
		lc, cc := make(chan probeResult, 1), make(chan probeResult, 1)
		go func() { lc <- probe(ctx, env.lbctlAddr, next.Instance, start, o) }()
		go func() { cc <- probe(ctx, env.ctAddr, next.Instance, start, o) }()
		l, c := <-lc, <-cc
		if l.err != nil {
			return lat, fmt.Errorf("round %d, lbctl: %w", i, l.err)
		}
		if c.err != nil {
			return lat, fmt.Errorf("round %d, consul-template: %w", i, c.err)
		}
		lat.lbctl.add(l)
		lat.consulTemplate.add(c)
		if o.verbose {
			fmt.Fprintf(os.Stderr, "round %d: lbctl %s/%s consul-template %s/%s (first/all)\n", i, ms(l.first), ms(l.all), ms(c.first), ms(c.all))
		}
		env.settle(o.gap)
	}
	return lat, nil
}

type probeResult struct {
	first, all time.Duration
	err        error
}

func (r *rounds) add(p probeResult) {
	r.first = append(r.first, p.first)
	r.all = append(r.all, p.all)
}

// probe calls addr on a fresh connection each time, from start until window
// after the new instance first answered. first is when it first answered;
// all is the start of the earliest call after which no call got the old
// instance: from then on nginx sent every new connection to the new config.
func probe(ctx context.Context, addr, instance string, start time.Time, o benchOptions) probeResult {
	var firstAt, lastOld time.Time
	deadline := start.Add(o.timeout)
	for time.Now().Before(deadline) {
		callStart := time.Now()
		got, err := testrig.CallInstance(ctx, addr)
		switch {
		case err != nil:
			return probeResult{err: fmt.Errorf("probe %s: %w", addr, err)}
		case got != instance:
			lastOld = callStart
		case firstAt.IsZero():
			firstAt = time.Now()
		}
		if !firstAt.IsZero() && time.Since(firstAt) > o.window {
			all := firstAt
			if lastOld.After(firstAt) {
				all = lastOld
			}
			return probeResult{first: firstAt.Sub(start), all: all.Sub(start)}
		}
	}
	return probeResult{err: fmt.Errorf("%s did not answer at %s within %s", instance, addr, o.timeout)}
}

func printTable(w io.Writer, o benchOptions, lat latencies) {
	fmt.Fprintf(w, "Consul change -> nginx serving the new upstream, %d rounds (%d CPUs, %s, %s)\n\n",
		o.rounds, runtime.NumCPU(), nginxVersion(), runtime.Version())
	fmt.Fprintf(w, "| %-42s | %-26s | %8s | %8s | %8s | %8s |\n", "pipeline", "measured", "p50", "p90", "p99", "max")
	fmt.Fprintf(w, "|%s|%s|%s|%s|%s|%s|\n", dash(44), dash(28), dash(10), dash(10), dash(10), dash(10))
	row(w, "lbctl (nginx -t, swap, SIGHUP, confirm)", "every new call on new", lat.lbctl.all)
	ct := "consul-template v" + testrig.ConsulTemplateVersion + " + nginx -s reload"
	row(w, ct, "every new call on new", lat.consulTemplate.all)
	row(w, "lbctl (nginx -t, swap, SIGHUP, confirm)", "first call on new", lat.lbctl.first)
	row(w, ct, "first call on new", lat.consulTemplate.first)
	fmt.Fprintf(w, "\nevery new call on the new upstream: lbctl is %.1fx faster at p50, %.1fx at p99\n",
		ratio(lat.consulTemplate.all, lat.lbctl.all, 50), ratio(lat.consulTemplate.all, lat.lbctl.all, 99))
	fmt.Fprintf(w, "first call on the new upstream:     lbctl is %.1fx faster at p50, %.1fx at p99\n",
		ratio(lat.consulTemplate.first, lat.lbctl.first, 50), ratio(lat.consulTemplate.first, lat.lbctl.first, 99))
}

func ratio(a, b []time.Duration, p int) float64 { return float64(pct(a, p)) / float64(pct(b, p)) }

func row(w io.Writer, name, what string, d []time.Duration) {
	fmt.Fprintf(w, "| %-42s | %-26s | %8s | %8s | %8s | %8s |\n", name, what, ms(pct(d, 50)), ms(pct(d, 90)), ms(pct(d, 99)),
		ms(slices.Max(d)))
}

func dash(n int) string { return strings.Repeat("-", n) }

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

// pct is the nearest-rank percentile.
func pct(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	i := (p*len(s)+99)/100 - 1
	return s[max(0, min(i, len(s)-1))]
}

func nginxVersion() string {
	out, _ := exec.Command("nginx", "-v").CombinedOutput()
	return strings.TrimPrefix(strings.TrimSpace(string(out)), "nginx version: ")
}
