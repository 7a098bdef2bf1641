package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lbctl/lbctl/internal/testrig"
	"github.com/lbctl/lbctl/live"
	"github.com/lbctl/lbctl/loadgen"
)

// drainedMsg is what lbctl register logs once every load balancer confirmed
// the drain; it then stops the app.
const drainedMsg = "drained: every load balancer confirmed"

// confirmTime is a slog handler that keeps the time lbctl register logged
// that the drain was confirmed.
type confirmTime struct {
	slog.Handler
	at *atomic.Pointer[time.Time]
}

func (h confirmTime) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == drainedMsg {
		at := r.Time
		h.at.Store(&at)
	}
	return h.Handler.Handle(ctx, r)
}

func (h confirmTime) WithAttrs(attrs []slog.Attr) slog.Handler {
	return confirmTime{h.Handler.WithAttrs(attrs), h.at}
}

func (h confirmTime) WithGroup(name string) slog.Handler {
	return confirmTime{h.Handler.WithGroup(name), h.at}
}

// liveLBConfig is lbctl run with live upstreams, as the demo runs it: nginx
// (with the Lua module) supervised and gated on the first render, one service.
func liveLBConfig(c *testrig.Consul, n *testrig.Nginx, listen string) string {
	return fmt.Sprintf(`consul: {address: %q}
nginx: {binary: %q, config: %q, prefix: %q, pid_file: %q, error_log: %q, services_conf: %q, live_upstreams: true, live_dir: %q}
lb_id: lb-test
services: [{name: greeter, listen: %q}]
%s`, c.Addr, n.Bin, n.MainConf, n.Dir, n.PIDFile, n.ErrorLog, filepath.Join(n.ConfD, "lbctl.conf"), filepath.Join(n.Dir, "live"),
		listen, nginxProgramYAML(n))
}

// app is one greeter run by `lbctl register -- app`.
type app struct {
	name, starts string
	port         int
	sigterm      context.CancelFunc
	done         chan struct{} // closed when lbctl register returned err
	err          error
	confirmed    atomic.Pointer[time.Time]
}

// startApp runs `lbctl register -- app` in-process for a new greeter tagged
// tag, named name. The app's environment is read when it starts, which is
// before the caller's next startApp (it waits for the app to pass its check).
func startApp(t *testing.T, c *testrig.Consul, name, tag string) *app {
	t.Helper()
	a := &app{name: name, port: testrig.FreePort(t), starts: filepath.Join(t.TempDir(), name+".starts"), done: make(chan struct{})}
	t.Setenv("LBCTL_TEST_APP_PORT", strconv.Itoa(a.port))
	t.Setenv("LBCTL_TEST_APP_INSTANCE", name)
	t.Setenv("LBCTL_TEST_APP_STARTS", a.starts)
	o, _ := parsedRegisterOptions(t, c.Addr, nil, "--name", "greeter", "--port", strconv.Itoa(a.port),
		"--address", "127.0.0.1", "--tag", tag, "--check-interval", "100ms", "--drain-timeout", "30s")
	o.log = slog.New(confirmTime{o.log.Handler(), &a.confirmed})
	ctx, sigterm := context.WithCancel(context.Background())
	a.sigterm = sigterm
	go func() {
		defer close(a.done)
		a.err = runRegister(ctx, o, []string{os.Args[0], "-test.run=^TestRegisterHelperApp$"})
	}()
	t.Cleanup(func() {
		sigterm()
		<-a.done
	})
	return a
}

// callStarts reads when each of the app's calls started (written as it exited).
func (a *app) callStarts(t *testing.T) []time.Time {
	t.Helper()
	b, err := os.ReadFile(a.starts)
	if err != nil {
		t.Fatalf("%s's call start times: %v", a.name, err)
	}
	var out []time.Time
	for _, f := range strings.Fields(string(b)) {
		ns, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			t.Fatalf("%s's call start times: %v", a.name, err)
		}
		out = append(out, time.Unix(0, ns))
	}
	return out
}

// waitLiveHolds waits until nginx, read back through its push socket, holds
// exactly these apps for the greeter upstream.
func waitLiveHolds(t *testing.T, socket string, apps ...*app) {
	t.Helper()
	client := live.NewClient(socket)
	var want []int
	for _, a := range apps {
		want = append(want, a.port)
	}
	slices.Sort(want)
	testrig.WaitFor(t, 20*time.Second, fmt.Sprintf("nginx to hold ports %v", want), func() error {
		set, err := client.Read(context.Background())
		if err != nil {
			return err
		}
		var got []int
		for _, p := range set["grpc_greeter"].Peers {
			got = append(got, p.Port)
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			return fmt.Errorf("nginx holds ports %v", got)
		}
		return nil
	})
}

// The demo's blue/green switch, 20 times in a row, under two kinds of load:
// callers that multiplex many concurrent calls on one shared connection, and
// callers each on its own connection. Each run registers the next instance
// with `lbctl register -- app`, then SIGTERMs the previous one's lbctl
// register, whose drain waits for the load balancer's confirmation before it
// stops the app. No call fails, and no call sent after a drain was confirmed
// (lbctl register logs the confirmation, then stops the app) is answered by
// the drained instance.
func TestBlueGreenUnderLoadThroughRegister(t *testing.T) {
	c := testrig.StartConsul(t)
	n := testrig.NewNginxWith(t, testrig.NginxOptions{Lua: true, Workers: 2})
	listen := testrig.LoopbackAddr(testrig.FreePort(t))
	cfg, socket := supervisedConfig(t, liveLBConfig(c, n, listen))
	startRun(t, cfg, socket)
	liveSocket := filepath.Join(n.Dir, "live", "live.sock")

	tags := []string{"blue", "green"}
	old := startApp(t, c, "app-00", tags[0])
	waitLiveHolds(t, liveSocket, old)
	testrig.ExpectInstance(t, listen, old.name, 10*time.Second)
	var total loadgen.Report
	totalLate, handledLate := 0, 0
	for run := 1; run <= 20; run++ {
		began := time.Now()
		answers := &answerLog{}
		shared, err := loadgen.New(loadgen.Options{Target: listen, Clients: 16, SharedConn: true, OnAnswer: answers.add})
		if err != nil {
			t.Fatal(err)
		}
		own, err := loadgen.New(loadgen.Options{Target: listen, Clients: 4, OnAnswer: answers.add})
		if err != nil {
			t.Fatal(err)
		}
		stopShared, stopOwn := shared.Start(), own.Start()

		next := startApp(t, c, fmt.Sprintf("app-%02d", run), tags[run%2])
		waitLiveHolds(t, liveSocket, old, next)
		testrig.WaitFor(t, 10*time.Second, next.name+" to answer both loads", func() error {
			if shared.Snapshot().ByInstance[next.name] == 0 || own.Snapshot().ByInstance[next.name] == 0 {
				return fmt.Errorf("not yet")
			}
			return nil
		})

		old.sigterm() // SIGTERM to the old instance's lbctl register
		select {
		case <-old.done:
			if code := exitCode(old.err); code != 7 {
				t.Fatalf("run %d: %s's lbctl register: exit %d (%v), want the app's 7", run, old.name, code, old.err)
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("run %d: %s's lbctl register did not return", run, old.name)
		}
		confirmed := old.confirmed.Load()
		if confirmed == nil {
			t.Fatalf("run %d: %s's lbctl register never logged %q", run, old.name, drainedMsg)
		}
		waitLiveHolds(t, liveSocket, next)
		after := shared.Snapshot().Calls + own.Snapshot().Calls
		testrig.WaitFor(t, 20*time.Second, "200 more calls", func() error {
			if shared.Snapshot().Calls+own.Snapshot().Calls < after+200 {
				return fmt.Errorf("not yet")
			}
			return nil
		})
		rs, ro := stopShared(), stopOwn()

		// A call sent after the drain was confirmed must not reach the
		// drained instance. The app's own record of when its calls started
		// is not that signal: nginx routes a call when the client sends it,
		// and the app may run its handler milliseconds later (measured: up
		// to 32 ms on a loaded machine, for calls nginx's balancer had sent
		// to the app before the confirmation), so it is only reported.
		late := answers.sentAfter(*confirmed, old.name)
		starts := old.callStarts(t)
		handledAfter, last := 0, time.Time{}
		for _, s := range starts {
			if s.After(*confirmed) {
				handledAfter++
			}
			if s.After(last) {
				last = s
			}
		}
		t.Logf("run %2d: %s -> %s in %s: shared connection %d calls, %d failed; own connections %d calls, %d failed; "+
			"%s answered %d calls, %d of them sent after its drain was confirmed; its last handler started %s after the confirmation (%d after it)",
			run, old.name, next.name, time.Since(began).Round(time.Millisecond), rs.Calls, rs.Failures, ro.Calls, ro.Failures,
			old.name, len(starts), late, last.Sub(*confirmed).Round(time.Microsecond), handledAfter)
		if rs.Failures != 0 || ro.Failures != 0 {
			t.Errorf("run %d: failed calls: shared connection %d %v, own connections %d %v", run, rs.Failures, rs.Errors, ro.Failures, ro.Errors)
		}
		if late != 0 {
			t.Errorf("run %d: %d calls sent after %s's drain was confirmed were answered by it", run, late, old.name)
		}
		totalLate += late
		handledLate += handledAfter
		if len(starts) == 0 {
			t.Errorf("run %d: %s recorded no call", run, old.name)
		}
		total.Calls += rs.Calls + ro.Calls
		total.Failures += rs.Failures + ro.Failures
		old = next
	}
	t.Logf("20 blue/green runs: %d calls, %d failed; %d sent after a drain was confirmed reached the drained instance; "+
		"%d handlers ran after the confirmation for calls sent before it", total.Calls, total.Failures, totalLate, handledLate)
}

// answerLog keeps, for every successful call, when it was sent and who answered.
type answerLog struct {
	mu  sync.Mutex
	all []answer
}

type answer struct {
	sent     time.Time
	instance string
}

func (l *answerLog) add(sent time.Time, instance string) {
	l.mu.Lock()
	l.all = append(l.all, answer{sent, instance})
	l.mu.Unlock()
}

// sentAfter is how many calls sent after t instance answered.
func (l *answerLog) sentAfter(t time.Time, instance string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, a := range l.all {
		if a.instance == instance && a.sent.After(t) {
			n++
		}
	}
	return n
}
