// Command lbctl-bench-scale measures lbctl's load balancer (built by package
// lb as `lbctl run` builds it, in a process of its own) in front of 10 to
// 2,000 services × 10 instances, on a Consul dev agent with its default
// limits: time to the first full render, Consul change → applied p50/p99
// while 10 changes a second churn random instances' health, memory,
// connections to the agent and requests a second, idle and under churn; and
// consul-template's first render, memory and connections on the same catalog.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/lbctl/lbctl/internal/jsonlines"
	"github.com/lbctl/lbctl/internal/percentile"
	"github.com/lbctl/lbctl/internal/testrig"
)

const instances = 10

type options struct {
	sizes          []int
	modes          []string
	churn, idle    time.Duration
	rate           int
	consulTemplate string
	log            bool
}

func main() {
	child := flag.String("child", "", "internal: run the lbctl side with these JSON arguments")
	sizes := flag.String("services", "10,100,1000,2000", "service counts, comma-separated")
	modes := flag.String("modes", "reload,live", "lbctl modes: reload, live")
	o := options{}
	flag.DurationVar(&o.churn, "churn", 10*time.Second, "how long changes churn")
	flag.DurationVar(&o.idle, "idle", 5*time.Second, "idle window for requests/s")
	flag.IntVar(&o.rate, "rate", 10, "changes a second")
	flag.BoolVar(&o.log, "log", false, "print lbctl's log (info) on stderr, to see where time goes")
	flag.StringVar(&o.consulTemplate, "consul-template", testrig.ConsulTemplatePath(), "consul-template binary")
	flag.Parse()
	if *child != "" {
		var a childArgs
		if err := json.Unmarshal([]byte(*child), &a); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		runChild(a)
		return
	}
	for _, s := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(s)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bad -services:", err)
			os.Exit(2)
		}
		o.sizes = append(o.sizes, n)
	}
	o.modes = strings.Split(*modes, ",")
	rows, err := measureAll(o)
	printTable(os.Stdout, o, rows)
	if err != nil {
		fmt.Fprintln(os.Stderr, "lbctl-bench-scale:", err)
		os.Exit(1)
	}
}

// measureAll measures every size; a testrig Fatal ends it with the rows so far.
func measureAll(o options) (rows []row, err error) {
	for _, n := range o.sizes {
		tb, err := testrig.NewProgramTB()
		if err != nil {
			return rows, err
		}
		err = func() (err error) {
			defer tb.Close()
			defer testrig.Catch(&err)
			rows = append(rows, measureSize(tb, o, n)...)
			return nil
		}()
		if err != nil {
			return rows, err
		}
	}
	return rows, nil
}

// row is one line of the table.
type row struct {
	what             string
	services         int
	firstRender      time.Duration
	phases           phases // lbctl's first render, broken down
	p50, p99         time.Duration
	seen50, seen99   time.Duration // change -> rendered (catalog, engine): the rest is the reload controller
	write50, write99 time.Duration // the change's write itself (Consul's own share)
	changes, seen    int
	anonKB, rssKB    int
	conns, maxConn   int64
	idleRPS          float64
	churnRPS         float64
	note             string
}

func measureSize(b testing.TB, o options, n int) []row {
	c := testrig.StartConsul(b)
	defer c.Stop()
	registerAll(b, c, n)
	var rows []row
	for _, mode := range o.modes {
		rows = append(rows, measureLbctl(b, o, c, n, mode))
	}
	rows = append(rows, measureConsulTemplate(b, o, c, n))
	return rows
}

// registerAll registers n services × 10 instances, one per node node-0..9
// (catalog registrations, each with a passing check).
func registerAll(b testing.TB, c *testrig.Consul, n int) {
	var wg sync.WaitGroup
	var failed atomic.Pointer[error]
	sem := make(chan struct{}, 16)
	for i := range n {
		for j := range instances {
			wg.Go(func() {
				sem <- struct{}{}
				defer func() { <-sem }()
				if err := setCheck(c.Client, i, j, api.HealthPassing, true); err != nil {
					failed.CompareAndSwap(nil, &err)
				}
			})
		}
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		b.Fatal(*err) // here, not in the goroutines: Fatal panics (testrig.ProgramTB)
	}
}

// setCheck writes instance j of service i (with withService) and its check's status.
func setCheck(client *api.Client, i, j int, status string, withService bool) error {
	node := fmt.Sprintf("node-%d", j)
	id := fmt.Sprintf("%s-%d", serviceName(i), j)
	reg := &api.CatalogRegistration{Node: node, Address: "127.0.0.1", SkipNodeUpdate: !withService,
		Check: &api.AgentCheck{Node: node, CheckID: "check-" + id, Name: "check", ServiceID: id, Status: status}}
	if withService {
		reg.Service = &api.AgentService{ID: id, Service: serviceName(i), Address: "127.0.0.1", Port: 20000 + i*instances + j}
	}
	_, err := client.Catalog().Register(reg, nil)
	return err
}

// lbctlChild is a running lbctl side and what it said.
type lbctlChild struct {
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	ready   chan message
	stats   chan message
	mu      sync.Mutex
	applied []message
}

func startChild(b testing.TB, a childArgs) *lbctlChild {
	arg, _ := json.Marshal(a)
	cmd := exec.Command(os.Args[0], "-child", string(arg))
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	ch := &lbctlChild{cmd: cmd, stdin: stdin, ready: make(chan message, 1), stats: make(chan message, 1)}
	go jsonlines.Read(stdout, func(m message) {
		switch m.Event {
		case "ready", "error":
			ch.ready <- m
		case "stats":
			ch.stats <- m
		case "applied":
			ch.mu.Lock()
			ch.applied = append(ch.applied, m)
			ch.mu.Unlock()
		}
	})
	return ch
}

func (ch *lbctlChild) stat() message {
	fmt.Fprintln(ch.stdin, "stats")
	return <-ch.stats
}

func measureLbctl(b testing.TB, o options, c *testrig.Consul, n int, mode string) row {
	r := row{what: "lbctl, " + mode + " mode", services: n}
	ch := startChild(b, childArgs{Consul: c.Addr, Services: n, Live: mode == "live", Log: o.log})
	defer func() { ch.stdin.Close(); ch.cmd.Wait() }()
	select {
	case m := <-ch.ready:
		if m.Event == "error" {
			r.note = m.Err
			return r
		}
		r.firstRender = time.Duration(m.FirstRenderMS * float64(time.Millisecond))
		r.phases = m.Phases
	case <-time.After(5 * time.Minute):
		r.note = "no first render in 5 minutes"
		return r
	}
	// lbtest.Run returns once the first render (Start, through Once) is
	// applied; the watch that follows fetches every service once more. The
	// idle window starts after it: pacing, not waiting for an event.
	time.Sleep(2*time.Second + time.Duration(n)*time.Millisecond)
	before := ch.stat()
	time.Sleep(o.idle) // the idle window being measured
	idle := ch.stat()
	r.idleRPS = float64(idle.Requests-before.Requests) / o.idle.Seconds()

	type change struct {
		svc string
		at  time.Time
	}
	var changes []change
	var writes []time.Duration
	down := map[[2]int]bool{}
	tick := time.NewTicker(time.Second / time.Duration(o.rate))
	end := time.Now().Add(o.churn)
	for now := range tick.C {
		if now.After(end) {
			break
		}
		i, j := rand.N(n), rand.N(instances)
		k := [2]int{i, j}
		status := api.HealthCritical
		if down[k] {
			status = api.HealthPassing
		}
		down[k] = !down[k]
		at := time.Now()
		if err := setCheck(c.Client, i, j, status, false); err != nil {
			b.Fatal(err)
		}
		writes = append(writes, time.Since(at))
		changes = append(changes, change{serviceName(i), at})
	}
	tick.Stop()
	time.Sleep(time.Second) // let the last changes land before reading the figures
	churn := ch.stat()
	r.churnRPS = float64(churn.Requests-idle.Requests) / (o.churn + time.Second).Seconds()
	r.anonKB, r.rssKB, r.conns, r.maxConn = churn.AnonKB, churn.RSSKB, churn.Conns, churn.MaxConns

	ch.mu.Lock()
	applied := slices.Clone(ch.applied)
	ch.mu.Unlock()
	var lat, seen []time.Duration
	for _, chg := range changes {
		for _, a := range applied {
			if a.At >= chg.at.UnixNano() && slices.Contains(a.Changed, chg.svc) {
				lat = append(lat, time.Duration(a.At-chg.at.UnixNano()))
				seen = append(seen, time.Duration(a.Seen-chg.at.UnixNano()))
				break
			}
		}
	}
	r.changes, r.seen = len(changes), len(lat)
	if len(lat) > 0 {
		r.p50, r.p99 = pct(lat, 50), pct(lat, 99)
		r.seen50, r.seen99 = pct(seen, 50), pct(seen, 99)
		r.write50, r.write99 = pct(writes, 50), pct(writes, 99)
	}
	return r
}

const ctTemplate = `{{ range services }}{{ if (.Name | regexMatch "^svc-") }}upstream {{ .Name }} {
{{- range service .Name }}
    server {{ .Address }}:{{ .Port }};
{{- end }}
}
{{ end }}{{ end }}`

// measureConsulTemplate renders every service's passing instances with
// consul-template -once, timed. (Its memory, connections and requests while
// watching are not measured here; lbctl-bench-memory compares memory.)
func measureConsulTemplate(b testing.TB, o options, c *testrig.Consul, n int) row {
	r := row{what: "consul-template " + testrig.ConsulTemplateVersion, services: n}
	if _, err := os.Stat(o.consulTemplate); err != nil {
		r.note = "not installed"
		return r
	}
	dir := b.TempDir()
	tpl := filepath.Join(dir, "all.ctmpl")
	if err := os.WriteFile(tpl, []byte(ctTemplate), 0o644); err != nil {
		b.Fatal(err)
	}
	args := func(dest string, extra ...string) []string {
		return append([]string{"-consul-addr", c.Addr, "-log-level", "err", "-template", tpl + ":" + dest}, extra...)
	}
	start := time.Now()
	once := exec.Command(o.consulTemplate, args(filepath.Join(dir, "once.conf"), "-once")...)
	once.WaitDelay = time.Second
	once.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	done := make(chan error, 1)
	if err := once.Start(); err != nil {
		b.Fatal(err)
	}
	go func() { done <- once.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			r.note = fmt.Sprintf("-once: %v", err)
			return r
		}
		r.firstRender = time.Since(start)
	case <-time.After(2 * time.Minute):
		once.Process.Kill()
		<-done
		r.note = "-once did not finish in 2 minutes"
		return r
	}
	return r
}

func printTable(w io.Writer, o options, rows []row) {
	fmt.Fprintf(w, "%d instances per service, %d changes/s for %s, idle window %s (%d CPUs, %s, %s)\n\n",
		instances, o.rate, o.churn, o.idle, runtime.NumCPU(), "consul 1.21.0 -dev", runtime.Version())
	fmt.Fprintln(w, "| pipeline | services | first full render | change → applied p50 / p99 | of which change → rendered p50 / p99 (the write itself) | private (anon) / RSS | conns to agent (max) | agent req/s idle / churn |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range rows {
		if r.note != "" && r.firstRender == 0 {
			fmt.Fprintf(w, "| %s | %d | %s | | | | | |\n", r.what, r.services, r.note)
			continue
		}
		lat, seen, rps, conns := "–", "–", "–", fmt.Sprintf("%d", r.conns)
		if r.changes > 0 {
			lat = fmt.Sprintf("%s / %s (%d of %d seen)", ms(r.p50), ms(r.p99), r.seen, r.changes)
			seen = fmt.Sprintf("%s / %s (write %s / %s)", ms(r.seen50), ms(r.seen99), ms(r.write50), ms(r.write99))
			rps = fmt.Sprintf("%.1f / %.1f", r.idleRPS, r.churnRPS)
			conns = fmt.Sprintf("%d (%d)", r.conns, r.maxConn)
		}
		mem := "–"
		if r.rssKB > 0 {
			mem = fmt.Sprintf("%.1f / %.1f MB", float64(r.anonKB)/1024, float64(r.rssKB)/1024)
		}
		first := ms(r.firstRender)
		if r.phases != (phases{}) {
			first += " (" + r.phases.String() + ")"
		}
		fmt.Fprintf(w, "| %s | %d | %s | %s | %s | %s | %s | %s |\n", r.what, r.services, first, lat, seen, mem, conns, rps)
	}
}

var (
	ms  = percentile.Ms
	pct = percentile.Of
)
