package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/lbctl/lbctl/config"
	"github.com/lbctl/lbctl/internal/jsonlines"
	"github.com/lbctl/lbctl/internal/testrig"
	"github.com/lbctl/lbctl/lb"
	"github.com/lbctl/lbctl/lb/lbtest"
	"github.com/lbctl/lbctl/render"
)

// childArgs is what the bench tells an lbctl pipeline, which runs in a
// process of its own as `lbctl run` does (and as consul-template does): the
// probes and the greeter backends in the bench's process do not share its
// Go scheduler.
type childArgs struct {
	Consul      string        `json:"consul"`
	Service     string        `json:"service"`
	Listen      string        `json:"listen"`
	LiveWorkers int           `json:"live_workers"` // > 0: live upstreams, an nginx of that many workers
	WaitMin     time.Duration `json:"wait_min"`
	Verbose     bool          `json:"verbose"`
}

// message is one line a pipeline's process writes on stdout.
type message struct {
	Event  string `json:"event"`            // ready, applied, generations, error
	Master int    `json:"master,omitempty"` // ready: the nginx master's pid
	Seen   int64  `json:"seen,omitempty"`   // applied: render.Update.Seen, Unix ns
	At     int64  `json:"at,omitempty"`     // applied: when OnApplied ran, Unix ns
	Old    int    `json:"old,omitempty"`    // generations: old nginx worker generations alive
	Err    string `json:"err,omitempty"`
}

// runChild runs one pipeline until stdin closes: it says "ready" once nginx
// serves the first render, "applied" from every OnApplied, and answers each
// line read on stdin with "generations".
func runChild(a childArgs) {
	out := jsonlines.NewWriter(os.Stdout)
	say := func(m message) { out.Write(m) }
	if err := child(a, say); err != nil {
		say(message{Event: "error", Err: err.Error()})
		os.Exit(1)
	}
}

func child(a childArgs, say func(message)) (err error) {
	tb, err := testrig.NewProgramTB()
	if err != nil {
		return err
	}
	defer tb.Close()
	defer testrig.Catch(&err)
	live := a.LiveWorkers > 0
	n := testrig.NewNginxWith(tb, testrig.NginxOptions{Lua: live, Workers: a.LiveWorkers})
	cfg := &config.Config{
		LBID:     "lbctl-bench-" + a.Service,
		Services: []config.Service{{Name: a.Service, Listen: a.Listen, Shift: true}},
		Nginx: config.Nginx{Binary: n.Bin, Config: n.MainConf, Prefix: n.Dir, PIDFile: n.PIDFile, ServicesConf: filepath.Join(n.ConfD, "lbctl.conf"),
			LiveUpstreams: live, LiveDir: filepath.Join(n.Dir, "live")},
		Wait: config.Wait{Min: a.WaitMin},
	}
	cfg.Consul.Address = a.Consul
	cfg.SetDefaults()
	log := slog.New(slog.DiscardHandler)
	if a.Verbose {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil)).With("pipeline", a.Service)
	}
	onApplied := func(u render.Update) {
		say(message{Event: "applied", Seen: u.Seen.UnixNano(), At: time.Now().UnixNano()})
	}
	l, err := lb.New(cfg, lb.Options{Log: log, OnApplied: onApplied})
	if err != nil {
		return err
	}
	if live && !l.Live() {
		return fmt.Errorf("lbctl live: nginx has no Lua module, live upstreams are off")
	}
	lbtest.Run(tb, l, n)
	say(message{Event: "ready", Master: n.PID()})
	for in := bufio.NewScanner(os.Stdin); in.Scan(); {
		old, _ := l.Controller().OldGenerations()
		say(message{Event: "generations", Old: old})
	}
	return nil
}

// pipeline is one lbctl load balancer in a process of its own (runChild),
// its Consul client built from the config as lbctl run builds it, and its
// nginx.
type pipeline struct {
	service string // the Consul service it serves
	addr    string // where its nginx listens
	master  int    // its nginx master
	pid     int    // its own process
	stdin   io.Writer
	ready   chan message
	gens    chan message
	// applied is the newest update nginx was confirmed to hold (OnApplied).
	applied atomic.Pointer[appliedAt]
}

// startPipeline starts a pipeline's process and waits for its first render
// to be served.
func startPipeline(tb *testrig.ProgramTB, a childArgs) (*pipeline, error) {
	arg, err := json.Marshal(a)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(os.Args[0], "-child", string(arg))
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	tb.Cleanup(func() { stdin.Close(); cmd.Wait() })
	p := &pipeline{service: a.Service, addr: a.Listen, pid: cmd.Process.Pid, stdin: stdin, ready: make(chan message, 1), gens: make(chan message, 1)}
	go p.read(stdout)
	select {
	case m := <-p.ready:
		if m.Event == "error" {
			return nil, fmt.Errorf("%s: %s", a.Service, m.Err)
		}
		p.master = m.Master
		return p, nil
	case <-time.After(30 * time.Second):
		return nil, fmt.Errorf("%s: no first render within 30s", a.Service)
	}
}

// read takes in what the pipeline's process says.
func (p *pipeline) read(stdout io.Reader) {
	jsonlines.Read(stdout, func(m message) {
		switch m.Event {
		case "ready", "error":
			p.ready <- m
		case "generations":
			p.gens <- m
		case "applied":
			p.applied.Store(&appliedAt{seen: time.Unix(0, m.Seen), applied: time.Unix(0, m.At)})
		}
	})
	close(p.ready)
}

// oldGenerations asks the pipeline how many old nginx worker generations are alive.
func (p *pipeline) oldGenerations() int {
	fmt.Fprintln(p.stdin)
	select {
	case m := <-p.gens:
		return m.Old
	case <-time.After(5 * time.Second):
		return -1
	}
}
