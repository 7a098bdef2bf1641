package consultemplate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/lbctl/lbctl/config"
	"github.com/lbctl/lbctl/internal/testrig"
	"github.com/lbctl/lbctl/render"
)

func TestMain(m *testing.M) {
	// Keep consul-template's TRACE lines out of test output; warnings stay.
	RouteLibraryLog(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	os.Exit(m.Run())
}

// seedTemplate is the seed stack's template: an upstream of every passing
// hello_server instance and a server block that grpc_passes to it.
const seedTemplate = "testdata/grpc.conf.tpl"

func templateConfig(t *testing.T, source string) config.Template {
	return config.Template{Source: source, Destination: filepath.Join(t.TempDir(), filepath.Base(source)+".conf")}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func newEngine(t *testing.T, c *testrig.Consul, templates ...config.Template) *Engine {
	t.Helper()
	e, err := New(templates, config.Consul{Address: c.Addr}, testLogger(t))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return e
}

func registerHello(c *testrig.Consul, id, address string, port int, check *api.AgentServiceCheck) {
	c.Register(&api.AgentServiceRegistration{ID: id, Name: "hello_server", Address: address, Port: port,
		Tags: []string{"grpc", id}, Check: check})
}

func onceFiles(t *testing.T, e *Engine) []render.File {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	files, err := e.Once(ctx)
	if err != nil {
		t.Fatalf("Once: %v", err)
	}
	return files
}

// renderWithConsulTemplate renders source with the real consul-template
// binary against the agent at addr.
func renderWithConsulTemplate(t *testing.T, addr, source string) []byte {
	t.Helper()
	bin := testrig.ConsulTemplateBinary(t)
	out := filepath.Join(t.TempDir(), "out.conf")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-once", "-log-level=err", "-consul-addr="+addr,
		"-template="+source+":"+out)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("consul-template: %v\n%s", err, msg)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestOnceRendersLikeConsulTemplate(t *testing.T) {
	c := testrig.StartConsul(t)
	tpls := []config.Template{templateConfig(t, seedTemplate), templateConfig(t, "testdata/delims.tpl"),
		templateConfig(t, "testdata/all_services.tpl")}
	tpls[1].LeftDelim, tpls[1].RightDelim = "[[", "]]"
	// consul-template has no flag for delimiters: the binary gets the
	// template rewritten to the default ones.
	references := []string{tpls[0].Source, withDefaultDelims(t, tpls[1].Source, "[[", "]]"), tpls[2].Source}
	e := newEngine(t, c, tpls...)

	compare := func(t *testing.T) []render.File {
		files := onceFiles(t, e)
		if len(files) != len(tpls) {
			t.Fatalf("got %d files, want %d", len(files), len(tpls))
		}
		for i, f := range files {
			if f.Path != tpls[i].Destination || f.Source != tpls[i].Source || f.Perms != 0o644 {
				t.Errorf("file %d: path %q source %q perms %v; want %q %q 0644", i, f.Path, f.Source, f.Perms, tpls[i].Destination, tpls[i].Source)
			}
			if want := renderWithConsulTemplate(t, c.Addr, references[i]); !bytes.Equal(f.Data, want) {
				t.Errorf("%s: lbctl rendered\n%s\nconsul-template rendered\n%s", f.Source, f.Data, want)
			}
		}
		return files
	}

	t.Run("no instances", func(t *testing.T) {
		files := compare(t)
		if !bytes.Contains(files[0].Data, []byte("server 127.0.0.1:1 down;")) {
			t.Errorf("want the no-instance branch, got\n%s", files[0].Data)
		}
	})
	t.Run("several instances", func(t *testing.T) {
		registerHello(c, "hello-b", "127.0.0.1", 7002, nil)
		registerHello(c, "hello-a", "127.0.0.1", 7001, nil)
		registerHello(c, "hello-node-address", "", 7003, nil)
		registerHello(c, "hello-sick", "127.0.0.1", 7004, &api.AgentServiceCheck{TTL: "1h", Status: api.HealthCritical})
		c.Register(&api.AgentServiceRegistration{ID: "echo-1", Name: "echo-server", Address: "127.0.0.2", Port: 7010,
			Tags: []string{"grpc"}, Meta: map[string]string{"weight": "3"}})
		c.Register(&api.AgentServiceRegistration{ID: "web-1", Name: "web", Address: "127.0.0.3", Port: 80})
		files := compare(t)
		for _, want := range []string{"server 127.0.0.1:7001;\n  server 127.0.0.1:7002;", "server 127.0.0.1:7003;"} {
			if !bytes.Contains(files[0].Data, []byte(want)) {
				t.Errorf("missing %q in\n%s", want, files[0].Data)
			}
		}
		if bytes.Contains(files[0].Data, []byte(":7004")) {
			t.Errorf("the critical instance was rendered:\n%s", files[0].Data)
		}
		if !bytes.Contains(files[1].Data, []byte("# {{ left alone }}")) {
			t.Errorf("custom delimiters: want {{ }} left alone, got\n%s", files[1].Data)
		}
		if !bytes.Contains(files[2].Data, []byte("upstream echo_server {\n  server 127.0.0.2:7010 weight=3;")) || bytes.Contains(files[2].Data, []byte("upstream web")) {
			t.Errorf("want an echo_server upstream with weight 3 and no web upstream, got\n%s", files[2].Data)
		}

		n := testrig.NewNginx(t)
		n.WriteConf("grpc.conf", string(files[0].Data))
		n.WriteConf("all.conf", string(files[2].Data))
		if err := n.Test(); err != nil {
			t.Errorf("nginx -t on the rendered configs: %v\n%s\n%s", err, files[0].Data, files[2].Data)
		}
	})
}

// withDefaultDelims copies the template at source with left and right
// replaced by {{ and }}.
func withDefaultDelims(t *testing.T, source, left, right string) string {
	t.Helper()
	src, err := os.ReadFile(source)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), filepath.Base(source))
	if err := os.WriteFile(out, []byte(strings.NewReplacer(left, "{{", right, "}}").Replace(string(src))), 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}

// emits collects what Run emits.
type emits chan []render.File

// next waits for an emit that satisfies ok, failing after a deadline.
func (ch emits) next(t *testing.T, what string, ok func(files []render.File) bool) []render.File {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case files := <-ch:
			if ok(files) {
				return files
			}
		case <-deadline:
			t.Fatalf("no emit with %s within 30s", what)
		}
	}
}

// startRun runs e until the test ends, sending every emit to the returned channel.
func startRun(t *testing.T, e *Engine) emits {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(emits, 64)
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx, func(f []render.File) { ch <- f }) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v after cancel, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Run did not return within 10s of cancel")
		}
	})
	return ch
}

// fileHas is an emit predicate: file i contains every one of want.
func fileHas(i int, want ...string) func([]render.File) bool {
	return func(files []render.File) bool {
		for _, w := range want {
			if !strings.Contains(string(files[i].Data), w) {
				return false
			}
		}
		return true
	}
}

// fileLacks is an emit predicate: file i contains none of unwanted.
func fileLacks(i int, unwanted ...string) func([]render.File) bool {
	return func(files []render.File) bool {
		for _, u := range unwanted {
			if strings.Contains(string(files[i].Data), u) {
				return false
			}
		}
		return true
	}
}

func all(preds ...func([]render.File) bool) func([]render.File) bool {
	return func(files []render.File) bool {
		for _, p := range preds {
			if !p(files) {
				return false
			}
		}
		return true
	}
}

func TestRunFollowsConsul(t *testing.T) {
	c := testrig.StartConsul(t)
	e := newEngine(t, c, templateConfig(t, seedTemplate), templateConfig(t, "testdata/all_services.tpl"))
	ch := startRun(t, e)

	first := ch.next(t, "the empty upstream", fileHas(0, "down; # no passing instance"))
	if len(first) != 2 {
		t.Fatalf("got %d files, want 2", len(first))
	}
	registerHello(c, "hello-1", "127.0.0.1", 7101, nil)
	ch.next(t, "the first instance", fileHas(0, "server 127.0.0.1:7101;"))
	registerHello(c, "hello-2", "127.0.0.1", 7102, nil)
	ch.next(t, "both instances", fileHas(0, "server 127.0.0.1:7101;", "server 127.0.0.1:7102;"))
	c.Deregister("hello-1")
	last := ch.next(t, "only the second instance", all(fileLacks(0, ":7101"), fileHas(0, "server 127.0.0.1:7102;")))

	n := testrig.NewNginx(t)
	n.WriteConf("grpc.conf", string(last[0].Data))
	if err := n.Test(); err != nil {
		t.Errorf("nginx -t: %v\n%s", err, last[0].Data)
	}

	// A new service makes the template query it; when it goes, so does the query.
	c.Register(&api.AgentServiceRegistration{ID: "echo-1", Name: "echo-server", Address: "127.0.0.2", Port: 7110, Tags: []string{"grpc"}})
	ch.next(t, "the new service's upstream", fileHas(1, "upstream echo_server {\n  server 127.0.0.2:7110; # echo-1"))
	c.Deregister("echo-1")
	ch.next(t, "the service's upstream gone", all(fileLacks(1, "echo_server"), fileHas(1, "upstream hello_server")))
}

// waitingLogger is a logger whose Warn records are sent on a channel.
func waitingLogger(t *testing.T) (*slog.Logger, chan string) {
	warns := make(chan string, 1024)
	h := slog.NewTextHandler(warnWriter{t: t, warns: warns}, &slog.HandlerOptions{Level: slog.LevelWarn})
	return slog.New(h), warns
}

type warnWriter struct {
	t     *testing.T
	warns chan string
}

func (w warnWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	select {
	case w.warns <- string(p):
	default:
	}
	return len(p), nil
}

func TestRunSurvivesConsulRestart(t *testing.T) {
	c := testrig.StartConsul(t, testrig.ConsulOptions{Persistent: true})
	log, warns := waitingLogger(t)
	e, err := New([]config.Template{templateConfig(t, seedTemplate)}, config.Consul{Address: c.Addr}, log)
	if err != nil {
		t.Fatal(err)
	}
	e.backoff = backoff{Base: 20 * time.Millisecond, Max: 200 * time.Millisecond}
	registerHello(c, "hello-1", "127.0.0.1", 7201, nil)
	ch := startRun(t, e)
	ch.next(t, "the first instance", fileHas(0, "server 127.0.0.1:7201;"))

	c.Stop()
	select {
	case <-warns:
	case <-time.After(90 * time.Second):
		t.Fatal("no warning within 90s of Consul stopping")
	}
	c.Start()
	registerHello(c, "hello-2", "127.0.0.1", 7202, nil)
	deadline := time.After(30 * time.Second)
	for {
		select {
		case files := <-ch:
			if !fileHas(0, "server 127.0.0.1:7201;")(files) {
				t.Fatalf("emitted without the instance Consul still has:\n%s", files[0].Data)
			}
			if fileHas(0, "server 127.0.0.1:7202;")(files) {
				return
			}
		case <-deadline:
			t.Fatal("no emit with both instances within 30s of the restart")
		}
	}
}

func TestRunEmitsOnlyChanges(t *testing.T) {
	if changed([][]byte{[]byte("a"), []byte("b")}, [][]byte{[]byte("a"), []byte("b")}) {
		t.Error("equal outputs reported as changed")
	}
	if !changed([][]byte{[]byte("a"), []byte("b")}, [][]byte{[]byte("a"), []byte("c")}) {
		t.Error("a changed second output not reported")
	}
	if !changed(nil, [][]byte{[]byte("")}) {
		t.Error("the first render must be emitted, even when empty")
	}
}

func TestCheckNamesFileAndLine(t *testing.T) {
	for _, tc := range []struct{ source, want string }{
		{"testdata/syntax_error.tpl", "testdata/syntax_error.tpl:3: unexpected"},
		{"testdata/unknown_func.tpl", `testdata/unknown_func.tpl:3: function "nosuchfunc" not defined`},
	} {
		t.Run(filepath.Base(tc.source), func(t *testing.T) {
			err := Check([]config.Template{templateConfig(t, tc.source)})
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("Check: got %v, want an error starting %q", err, tc.want)
			}
			if _, err := New([]config.Template{templateConfig(t, tc.source)}, config.Consul{}, testLogger(t)); err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("New: got %v, want an error starting %q", err, tc.want)
			}
		})
	}
}

func TestCheckAcceptsGoodTemplates(t *testing.T) {
	delims := templateConfig(t, "testdata/delims.tpl")
	delims.LeftDelim, delims.RightDelim = "[[", "]]"
	if err := Check([]config.Template{templateConfig(t, seedTemplate), delims}); err != nil {
		t.Fatalf("Check: %v", err)
	}
}

func TestCheckHasNoSideEffects(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "written")
	src := filepath.Join(dir, "effects.tpl")
	os.WriteFile(src, []byte(`{{ writeToFile "`+victim+`" "" "" "0644" "x" }}{{ plugin "/bin/false" }}`), 0o644)
	if err := Check([]config.Template{templateConfig(t, src)}); err != nil {
		t.Fatalf("Check: %v", err)
	}
	if _, err := os.Stat(victim); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Check ran writeToFile: stat %s: %v", victim, err)
	}
}

func TestMissingTemplateFile(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope.tpl")
	for name, err := range map[string]error{
		"Check": Check([]config.Template{templateConfig(t, missing)}),
		"New": func() error {
			_, err := New([]config.Template{templateConfig(t, missing)}, config.Consul{}, testLogger(t))
			return err
		}(),
	} {
		if err == nil || !strings.Contains(err.Error(), missing) || !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: got %v, want a not-exist error naming %s", name, err, missing)
		}
	}
}

func TestCheckReportsEveryBadTemplate(t *testing.T) {
	err := Check([]config.Template{templateConfig(t, "testdata/syntax_error.tpl"), templateConfig(t, "testdata/unknown_func.tpl")})
	if err == nil || !strings.Contains(err.Error(), "syntax_error.tpl:3") || !strings.Contains(err.Error(), "unknown_func.tpl:3") {
		t.Fatalf("got %v, want both templates named", err)
	}
}

func TestOnceUnreachableConsul(t *testing.T) {
	const token = "s3cr3t-acl-token-7f1e"
	var logs bytes.Buffer
	addr := fmt.Sprintf("127.0.0.1:%d", testrig.FreePort(t))
	e, err := New([]config.Template{templateConfig(t, seedTemplate)},
		config.Consul{Address: addr, Token: config.Secret(token)},
		slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatalf("New must not contact Consul: %v", err)
	}
	// Long enough for the first refused connection even on a loaded machine.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	files, err := e.Once(ctx)
	if files != nil || !errors.Is(err, ErrNotRendered) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got files %v, err %v; want ErrNotRendered and DeadlineExceeded", files, err)
	}
	for _, want := range []string{addr, `health.service(hello_server|passing)`, "connection refused"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if strings.Contains(err.Error(), token) || strings.Contains(logs.String(), token) {
		t.Errorf("the token leaked:\nerror: %v\nlogs: %s", err, logs.String())
	}
	if !strings.Contains(logs.String(), "consul query failed") {
		t.Errorf("the failed queries were not logged:\n%s", logs.String())
	}
}

func TestOnceTemplateErrorNamesLine(t *testing.T) {
	c := testrig.StartConsul(t)
	src := filepath.Join(t.TempDir(), "first.tpl")
	os.WriteFile(src, []byte("upstream u {\n{{ with index (service \"hello_server\") 0 }}server {{ .Address }};{{ end }}\n}\n"), 0o644)
	e := newEngine(t, c, templateConfig(t, src))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := e.Once(ctx)
	if err == nil || !strings.Contains(err.Error(), src+":2:") || !strings.Contains(err.Error(), "index") {
		t.Fatalf("got %v, want an execution error at %s:2", err, src)
	}
}

func TestVaultTemplateIsRefused(t *testing.T) {
	dir := t.TempDir()
	direct := filepath.Join(dir, "vault.tpl")
	os.WriteFile(direct, []byte(`{{ with secret "secret/x" }}{{ .Data }}{{ end }}`), 0o644)
	if err := Check([]config.Template{templateConfig(t, direct)}); err == nil || !strings.Contains(err.Error(), "not Vault or Nomad") {
		t.Fatalf("Check: got %v, want a refusal of the Vault dependency", err)
	}

	// Reached only with data: refused when rendering.
	nested := filepath.Join(dir, "nested.tpl")
	os.WriteFile(nested, []byte(`{{ range service "hello_server" }}{{ with secret "secret/x" }}{{ .Data }}{{ end }}{{ end }}`), 0o644)
	c := testrig.StartConsul(t)
	registerHello(c, "hello-1", "127.0.0.1", 7401, nil)
	e := newEngine(t, c, templateConfig(t, nested))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := e.Once(ctx); err == nil || !strings.Contains(err.Error(), "not Vault or Nomad") {
		t.Fatalf("Once: got %v, want a refusal of the Vault dependency", err)
	}
}

func TestMissingTokenFile(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "token")
	_, err := New([]config.Template{templateConfig(t, seedTemplate)}, config.Consul{TokenFile: missing}, testLogger(t))
	if err == nil || !strings.Contains(err.Error(), missing) {
		t.Fatalf("got %v, want an error naming %s", err, missing)
	}
}

func TestRunKeepsLastOutputWhileTemplateFails(t *testing.T) {
	c := testrig.StartConsul(t)
	src := filepath.Join(t.TempDir(), "picky.tpl")
	os.WriteFile(src, []byte("upstream u {\n{{ range service \"hello_server\" }}{{ if eq .Port 7666 }}{{ sprig_fail \"port 7666 is cursed\" }}{{ end }}  server {{ .Address }}:{{ .Port }};\n{{ end }}}\n"), 0o644)
	log, warns := waitingLogger(t)
	e, err := New([]config.Template{templateConfig(t, src)}, config.Consul{Address: c.Addr}, log)
	if err != nil {
		t.Fatal(err)
	}
	registerHello(c, "good-1", "127.0.0.1", 7301, nil)
	ch := startRun(t, e)
	ch.next(t, "the good instance", fileHas(0, "server 127.0.0.1:7301;"))

	registerHello(c, "cursed", "127.0.0.1", 7666, nil)
	select {
	case w := <-warns:
		if !strings.Contains(w, src+":2:") || !strings.Contains(w, "port 7666 is cursed") {
			t.Errorf("want the template error with its file and line, got %s", w)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the failing template was not logged within 30s")
	}
	c.Deregister("cursed")
	registerHello(c, "good-2", "127.0.0.1", 7302, nil)
	deadline := time.After(30 * time.Second)
	for {
		select {
		case files := <-ch:
			if strings.Contains(string(files[0].Data), "7666") {
				t.Fatalf("emitted output of a failed render:\n%s", files[0].Data)
			}
			if fileHas(0, "server 127.0.0.1:7301;", "server 127.0.0.1:7302;")(files) {
				return
			}
		case <-deadline:
			t.Fatal("no emit with both good instances within 30s")
		}
	}
}

// issue16Address is the registration of docs issue 16, item 1: rendered
// verbatim by the seed template it closes the upstream and adds a server
// that lists / on port 9999, and nginx -t accepts it.
const issue16Address = "10.9.9.9:1; } server { listen 127.0.0.1:9999; location / { root /; autoindex on; } } upstream x { server 10.9.9.9"

func TestOnceScreensConsulData(t *testing.T) {
	c := testrig.StartConsul(t)
	registerHello(c, "hello-good", "127.0.0.1", 7501, nil)
	registerHello(c, "hello-attack", issue16Address, 7502, nil)
	c.Register(&api.AgentServiceRegistration{ID: "hello-tagged", Name: "hello_server", Address: "127.0.0.1", Port: 7503,
		Tags: []string{"grpc", "x; }"}})

	var logs bytes.Buffer
	// One engine, both kinds: the same query feeds a screened template and
	// one that opted out.
	screened, raw := templateConfig(t, seedTemplate), templateConfig(t, seedTemplate)
	raw.RawConsulData = true
	e, err := New([]config.Template{screened, raw}, config.Consul{Address: c.Addr},
		slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		t.Fatal(err)
	}
	files := onceFiles(t, e)
	out := string(files[0].Data)
	if !strings.Contains(out, "server 127.0.0.1:7501;") || strings.Contains(out, "9999") || strings.Contains(out, ":7503") {
		t.Fatalf("want only the good instance, got\n%s", out)
	}
	for _, want := range []string{"service_id=hello-attack", `is not an IP or a host name`, "service_id=hello-tagged", "carries nginx syntax"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
	n := testrig.NewNginx(t)
	if err := n.TestWith("grpc.conf", out); err != nil {
		t.Errorf("nginx -t: %v\n%s", err, out)
	}

	// Opted out, the template gets what consul-template gives it: the hole.
	if !strings.Contains(string(files[1].Data), "listen 127.0.0.1:9999;") {
		t.Fatalf("raw_consul_data: want the registration verbatim, got\n%s", files[1].Data)
	}
	if want := renderWithConsulTemplate(t, c.Addr, seedTemplate); !bytes.Equal(files[1].Data, want) {
		t.Errorf("raw_consul_data: lbctl rendered\n%s\nconsul-template rendered\n%s", files[1].Data, want)
	}
}
