package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lbctl/lbctl/internal/procmem"
	"github.com/lbctl/lbctl/internal/testrig"
)

const ctTemplate = `{{ range services }}{{ if (.Name | regexMatch "^svc-") }}upstream {{ .Name }} {
{{- range service .Name }}
    server {{ .Address }}:{{ .Port }};
{{- end }}
}
{{ end }}{{ end }}`

const (
	// onceTimeout bounds consul-template -once.
	onceTimeout = 2 * time.Minute
	// watchTimeout bounds consul-template's first render in watch mode:
	// above the agent's 200 connections per client it may never come.
	watchTimeout = time.Minute
)

// measureConsulTemplate renders every service's passing instances with
// consul-template -once, timed, then runs it watching the same template
// through a counting proxy in front of the agent, under the same churn.
func measureConsulTemplate(b testing.TB, o options, c *testrig.Consul, churn *churner, n int) row {
	r := row{what: "consul-template " + testrig.ConsulTemplateVersion, services: n}
	if _, err := os.Stat(o.consulTemplate); err != nil {
		r.fail = "not installed"
		return r
	}
	dir := b.TempDir()
	tpl := filepath.Join(dir, "all.ctmpl")
	if err := os.WriteFile(tpl, []byte(ctTemplate), 0o644); err != nil {
		b.Fatal(err)
	}
	if r.firstRender, r.fail = renderOnce(b, o, c.Addr, tpl, filepath.Join(dir, "once.conf")); r.fail != "" {
		return r
	}
	watchDir := filepath.Join(dir, "watch")
	if err := os.Mkdir(watchDir, 0o755); err != nil {
		b.Fatal(err)
	}
	measureWatch(b, o, c.Addr, churn, n, tpl, filepath.Join(watchDir, "all.conf"), &r)
	return r
}

// renderOnce times consul-template -once, or says why it did not finish.
func renderOnce(b testing.TB, o options, agent, tpl, dest string) (time.Duration, string) {
	start := time.Now()
	p := startConsulTemplate(b, o.consulTemplate, ctArgs(agent, tpl, dest, "-once"))
	defer p.stop()
	select {
	case <-p.exited:
		if p.err != nil {
			return 0, "-once: " + p.why()
		}
		return time.Since(start), ""
	case <-time.After(onceTimeout):
		return 0, fmt.Sprintf("-once did not finish in %s", onceTimeout)
	}
}

// measureWatch fills the row's watch-mode figures: consul-template's first
// render, its requests idle, then change → rendered, memory, connections
// and requests under the churn.
func measureWatch(b testing.TB, o options, agent string, churn *churner, n int, tpl, dest string, r *row) {
	proxy := startAgentProxy(b, agent)
	defer proxy.close()
	out := watchRenders(b, dest, n)
	defer out.close()
	start := time.Now()
	p := startConsulTemplate(b, o.consulTemplate, ctArgs(proxy.addr, tpl, dest))
	defer p.stop()
	defer func() { r.notes = append(append(r.notes, p.exitNote()...), proxy.notes()...) }() // before stop
	if !waitFor(out.changed, p.exited, watchTimeout, out.any) {
		r.alsoFirst = fmt.Sprintf("watch mode: no render in %s", time.Since(start).Round(time.Second))
		r.readProcess(p, proxy)
		return
	}
	r.alsoFirst = "watch mode: " + ms(out.first().Sub(start))
	settle(n)
	idleFrom := proxy.sample()
	idleWindow(o)
	idle := proxy.sample()
	changes := churn.run(b, o)
	outs := out.waitRendered(changes, p.exited)
	churned := proxy.sample()
	r.idleRPS, r.churnRPS = perSecond(idleFrom, idle), perSecond(idle, churned)
	r.setLatencies(changes, outs)
	r.readProcess(p, proxy)
}

// readProcess fills the row's memory (consul-template's) and connections (the proxy's).
func (r *row) readProcess(p *ctProcess, proxy *agentProxy) {
	if u, err := procmem.Of(p.cmd.Process.Pid); err == nil {
		r.anonKB, r.rssKB = u.Anonymous, u.RSS
	}
	r.conns, r.maxConn = proxy.count.Open.Load(), proxy.count.Most.Load()
}

// ctArgs are consul-template's arguments to render tpl into dest from the
// agent at agent.
func ctArgs(agent, tpl, dest string, extra ...string) []string {
	return append([]string{"-consul-addr", agent, "-log-level", "err", "-template", tpl + ":" + dest}, extra...)
}

// ctProcess is a running consul-template.
type ctProcess struct {
	cmd    *exec.Cmd
	log    testrig.LogBuffer // its stderr
	exited chan struct{}     // closed once it exited and was reaped; err is then set
	err    error
}

// startConsulTemplate starts bin, killed if this process dies.
func startConsulTemplate(b testing.TB, bin string, args []string) *ctProcess {
	p := &ctProcess{cmd: exec.Command(bin, args...), exited: make(chan struct{})}
	p.cmd.Stderr = &p.log
	p.cmd.WaitDelay = time.Second
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.exited) }()
	return p
}

// stop kills it if it still runs, and reaps it.
func (p *ctProcess) stop() {
	p.cmd.Process.Kill()
	<-p.exited
}

// exitNote says that it exited on its own, if it did, before stop.
func (p *ctProcess) exitNote() []string {
	select {
	case <-p.exited:
		return []string{"consul-template exited during the run: " + p.why()}
	default:
		return nil
	}
}

// why is its exit and the last line it logged.
func (p *ctProcess) why() string {
	lines := strings.Split(strings.TrimSpace(p.log.String()), "\n")
	return fmt.Sprintf("%v (%s)", p.err, lines[len(lines)-1])
}
