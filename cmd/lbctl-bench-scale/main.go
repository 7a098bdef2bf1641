// Command lbctl-bench-scale measures lbctl's load balancer (built by package
// lb as `lbctl run` builds it, in a process of its own) in front of 10 to
// 2,000 services × 10 instances, on a Consul dev agent with its default
// limits: time to the first full render, Consul change → applied p50/p99
// (from the write returned and from before it) while 10 changes a second
// churn random instances' health, memory, connections to the agent and
// requests a second, idle and under churn; and consul-template on the same
// catalog: its -once first render, then, watching (through a counting proxy
// in front of the agent), the same figures with change → rendered (its
// output file written) where it can run.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
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
	what           string
	services       int
	firstRender    time.Duration
	phases         phases // lbctl's first render, broken down
	alsoFirst      string // beside the first render (consul-template's in watch mode)
	changes, seen  int
	applied        figures          // change → applied (lbctl: OnApplied)
	rendered       figures          // change → rendered (lbctl: Update.Seen; consul-template: its file written)
	write          [2]time.Duration // the change's write itself (Consul's own share), p50 / p99
	anonKB, rssKB  int
	conns, maxConn int64
	idleRPS        float64
	churnRPS       float64
	fail           string   // why the row was not measured
	notes          []string // printed under the table
}

// setLatencies fills the row's change figures from each change's outcome.
func (r *row) setLatencies(changes []change, outs []outcome) {
	r.changes, r.seen = len(changes), seenCount(outs)
	r.applied = figuresOf(changes, outs, appliedAt)
	r.rendered = figuresOf(changes, outs, renderedAt)
	if len(changes) > 0 {
		r.write = writeTimes(changes)
	}
}

// seenTimeout is how long after the churn the last changes may take to be seen.
const seenTimeout = 5 * time.Second

func measureSize(b testing.TB, o options, n int) []row {
	c := testrig.StartConsul(b)
	defer c.Stop()
	registerAll(b, c, n)
	churn := newChurner(c.Client, n)
	var rows []row
	for _, mode := range o.modes {
		rows = append(rows, measureLbctl(b, o, c, churn, n, mode))
	}
	rows = append(rows, measureConsulTemplate(b, o, c, churn, n))
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
				if err := register(c.Client, i, j); err != nil {
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

// register writes instance j of service i and its passing check.
func register(client *api.Client, i, j int) error {
	node, id := fmt.Sprintf("node-%d", j), instanceID(i, j)
	_, err := client.Catalog().Register(&api.CatalogRegistration{Node: node, Address: "127.0.0.1",
		Service: &api.AgentService{ID: id, Service: serviceName(i), Address: "127.0.0.1", Port: instancePort(i, j)},
		Check:   &api.AgentCheck{Node: node, CheckID: "check-" + id, Name: "check", ServiceID: id, Status: api.HealthPassing}}, nil)
	return err
}

// firstPort is instance 0 of service 0's port; instance j of service i
// listens on firstPort + i*instances + j.
const firstPort = 20000

func instancePort(i, j int) int  { return firstPort + i*instances + j }
func instanceID(i, j int) string { return fmt.Sprintf("%s-%d", serviceName(i), j) }

// lbctlChild is a running lbctl side and what it said.
type lbctlChild struct {
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	ready   chan message
	stats   chan message
	changed chan struct{} // signalled after each applied message
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
	ch := &lbctlChild{cmd: cmd, stdin: stdin, ready: make(chan message, 1), stats: make(chan message, 1), changed: make(chan struct{}, 1)}
	go jsonlines.Read(stdout, ch.hear)
	return ch
}

// hear takes one message from the child.
func (ch *lbctlChild) hear(m message) {
	switch m.Event {
	case "ready", "error":
		ch.ready <- m
	case "stats":
		ch.stats <- m
	case "applied":
		ch.mu.Lock()
		ch.applied = append(ch.applied, m)
		ch.mu.Unlock()
		signal(ch.changed)
	}
}

// stop ends the child (stdin closed) and reaps it.
func (ch *lbctlChild) stop() { ch.stdin.Close(); ch.cmd.Wait() }

// stat asks the child for its figures, and samples its requests.
func (ch *lbctlChild) stat() (message, sample) {
	fmt.Fprintln(ch.stdin, "stats")
	m := <-ch.stats
	return m, sample{requests: m.Requests, at: time.Now()}
}

// waitFirstRender fills the row's first render, or says why there is none.
func (ch *lbctlChild) waitFirstRender(r *row) bool {
	select {
	case m := <-ch.ready:
		if m.Event == "error" {
			r.fail = m.Err
			return false
		}
		r.firstRender = time.Duration(m.FirstRenderMS * float64(time.Millisecond))
		r.phases = m.Phases
		return true
	case <-time.After(5 * time.Minute):
		r.fail = "no first render in 5 minutes"
		return false
	}
}

// waitApplied waits until every change is applied, or seenTimeout passes.
func (ch *lbctlChild) waitApplied(changes []change) []outcome {
	return waitSeen(ch.changed, nil, seenTimeout, func() []outcome {
		ch.mu.Lock()
		defer ch.mu.Unlock()
		return matchApplied(changes, ch.applied)
	})
}

// matchApplied pairs each change with the first applied update whose
// answer for the change's service is at the write's index or later.
func matchApplied(changes []change, applied []message) []outcome {
	outs := make([]outcome, len(changes))
	for i, chg := range changes {
		for _, a := range applied {
			if a.Changed[chg.svc] >= chg.index {
				outs[i] = outcome{rendered: time.Unix(0, a.Seen), applied: time.Unix(0, a.At)}
				break
			}
		}
	}
	return outs
}

func measureLbctl(b testing.TB, o options, c *testrig.Consul, churn *churner, n int, mode string) row {
	r := row{what: "lbctl, " + mode + " mode", services: n}
	ch := startChild(b, childArgs{Consul: c.Addr, Services: n, Live: mode == "live", Log: o.log})
	defer ch.stop()
	if !ch.waitFirstRender(&r) {
		return r
	}
	settle(n)
	started, idleFrom := ch.stat()
	idleWindow(o)
	_, idle := ch.stat()
	changes := churn.run(b, o)
	outs := ch.waitApplied(changes)
	end, churned := ch.stat()
	r.idleRPS, r.churnRPS = perSecond(idleFrom, idle), perSecond(idle, churned)
	r.anonKB, r.rssKB, r.conns, r.maxConn = end.AnonKB, end.RSSKB, end.Conns, end.MaxConns
	r.notes = append(r.notes, fmt.Sprintf("answers 429 from the agent: %d until the first render was applied and its watch started, %d after (idle and churn)",
		started.RateLimited, end.RateLimited-started.RateLimited))
	r.setLatencies(changes, outs)
	return r
}

func printTable(w io.Writer, o options, rows []row) {
	fmt.Fprintf(w, "%d instances per service, %d changes/s for %s, idle window %s (%d CPUs, %s, %s)\n\n",
		instances, o.rate, o.churn, o.idle, runtime.NumCPU(), "consul 1.21.0 -dev", runtime.Version())
	fmt.Fprintln(w, "| pipeline | services | first full render | changes seen | change → applied p50 / p99: from the write returned (from before the write) | of which change → rendered, the same | the write itself p50 / p99 | private (anon) / RSS | conns to agent (max) | agent req/s idle / churn |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	var notes []string
	for _, r := range rows {
		fmt.Fprintln(w, r.line())
		for _, n := range r.notes {
			notes = append(notes, fmt.Sprintf("%s, %d services: %s", r.what, r.services, n))
		}
	}
	fmt.Fprint(w, "\n"+legend)
	for _, n := range notes {
		fmt.Fprintln(w, "- "+n)
	}
}

const legend = `Change → applied and → rendered: p50 / p99 from the write returned (the change is in Consul), in
parentheses from just before the write (its round trip included). lbctl's change → rendered is the render's
Update.Seen; in reload mode a coalesced render keeps its burst's first Seen, which can precede the change.
consul-template's is its output file renamed into place (seen by inotify); it reloads nothing here, so it has
no change → applied. Its connections and requests are counted by a reverse proxy in front of the agent.
`

// line is the row's line of the table.
func (r row) line() string {
	if r.fail != "" && r.firstRender == 0 {
		return fmt.Sprintf("| %s | %d | %s | | | | | | | |", r.what, r.services, r.fail)
	}
	first := ms(r.firstRender)
	if r.phases != (phases{}) {
		first += " (" + r.phases.String() + ")"
	}
	if r.alsoFirst != "" {
		first += " (" + r.alsoFirst + ")"
	}
	seen, write, rps := "–", "–", "–"
	if r.changes > 0 {
		seen = fmt.Sprintf("%d of %d", r.seen, r.changes)
		write = fmt.Sprintf("%s / %s", ms(r.write[0]), ms(r.write[1]))
		rps = fmt.Sprintf("%.1f / %.1f", r.idleRPS, r.churnRPS)
	}
	mem, conns := "–", "–"
	if r.rssKB > 0 {
		mem = fmt.Sprintf("%.1f / %.1f MB", float64(r.anonKB)/1024, float64(r.rssKB)/1024)
	}
	if r.maxConn > 0 {
		conns = fmt.Sprintf("%d (%d)", r.conns, r.maxConn)
	}
	return fmt.Sprintf("| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s |", r.what, r.services, first, seen, r.applied, r.rendered, write, mem, conns, rps)
}

var (
	ms  = percentile.Ms
	pct = percentile.Of
)
