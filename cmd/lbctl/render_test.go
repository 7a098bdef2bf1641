package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/lbctl/lbctl/internal/testrig"
)

// writeFile writes name under dir and returns its path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// nginxYAML is the nginx: section pointing lbctl at a test nginx.
func nginxYAML(n *testrig.Nginx) string {
	return fmt.Sprintf("nginx: {binary: %q, config: %q, prefix: %q, pid_file: %q, error_log: %q, services_conf: %q}\n",
		n.Bin, n.MainConf, n.Dir, n.PIDFile, n.ErrorLog, filepath.Join(n.ConfD, "lbctl.conf"))
}

func renderOpts(cfgPath string) (*renderOptions, *bytes.Buffer) {
	var out bytes.Buffer
	return &renderOptions{
		globalOptions: &globalOptions{configPath: cfgPath, logLevel: "error", logFormat: "text"},
		timeout:       5 * time.Second, stdout: &out,
	}, &out
}

// End to end: instances registered in a real Consul, rendered by lbctl,
// served by a real nginx, answering real gRPC calls.
func TestRenderOnceServesThroughNginx(t *testing.T) {
	c := testrig.StartConsul(t)
	a := testrig.StartGreeter(t, "alpha", "v1")
	b := testrig.StartGreeter(t, "beta", "v1")
	c.Register(a.Registration("greeter", "blue"))
	c.Register(b.Registration("greeter", "green"))
	n := testrig.NewNginx(t)
	lbPort := testrig.FreePort(t)
	cfg := writeFile(t, t.TempDir(), "lbctl.yaml", fmt.Sprintf(
		"consul: {address: %q}\n%sservices:\n  - name: greeter\n    tag: blue\n    listen: 127.0.0.1:%d\n",
		c.Addr, nginxYAML(n), lbPort))

	o, _ := renderOpts(cfg)
	o.once = true
	if err := runRender(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	n.Start()
	testrig.ExpectInstance(t, testrig.LoopbackAddr(lbPort), "alpha", 10*time.Second)
	for i := 0; i < 5; i++ { // only the blue instance is in the upstream
		if got, err := testrig.CallInstance(context.Background(), testrig.LoopbackAddr(lbPort)); err != nil || got != "alpha" {
			t.Fatalf("call %d answered by %q (%v), want alpha only", i, got, err)
		}
	}
}

func TestDryRunPrintsWithoutWriting(t *testing.T) {
	c := testrig.StartConsul(t)
	g := testrig.StartGreeter(t, "alpha", "v1")
	c.Register(g.Registration("greeter"))
	dir := t.TempDir()
	dest := filepath.Join(dir, "lbctl.conf")
	cfg := writeFile(t, dir, "lbctl.yaml", fmt.Sprintf(
		"consul: {address: %q}\nnginx: {services_conf: %q}\nservices: [{name: greeter, listen: 5000}]\n", c.Addr, dest))
	o, out := renderOpts(cfg)
	o.dryRun = true
	if err := runRender(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	header := fmt.Sprintf("==> %s (builtin) <==\n", dest)
	if !strings.HasPrefix(out.String(), header) || !strings.Contains(out.String(), "server "+g.Addr+";") {
		t.Fatalf("dry run printed:\n%s\nwant header %q and the instance", out, header)
	}
	if _, err := os.Stat(dest); !os.IsNotExist(err) {
		t.Fatalf("dry run wrote %s", dest)
	}
}

func TestRenderOnceUnreachableConsulFails(t *testing.T) {
	dir := t.TempDir()
	dest := filepath.Join(dir, "lbctl.conf")
	cfg := writeFile(t, dir, "lbctl.yaml", fmt.Sprintf(
		"consul: {address: %q, token: top-secret}\nnginx: {services_conf: %q}\nservices: [{name: greeter, listen: 5000}]\n",
		testrig.LoopbackAddr(testrig.FreePort(t)), dest))
	o, _ := renderOpts(cfg)
	o.once, o.timeout = true, 500*time.Millisecond
	err := runRender(context.Background(), o)
	if err == nil || !strings.Contains(err.Error(), "consul did not answer") {
		t.Fatalf("err = %v, want a clear 'consul did not answer'", err)
	}
	if strings.Contains(err.Error(), "top-secret") {
		t.Fatalf("token in the error: %v", err)
	}
	if _, statErr := os.Stat(dest); !os.IsNotExist(statErr) {
		t.Fatal("wrote a config although Consul never answered")
	}
}

func TestBadInputErrorsSayWhatAndWhere(t *testing.T) {
	dir := t.TempDir()
	tpl := writeFile(t, dir, "bad.tpl", "upstream x {\n{{ range service \"greeter\" }}\n  server {{ .Address }\n{{ end }}}\n")
	cases := []struct {
		name, config, want string
	}{
		{"unknown key", "services:\n  - name: greeter\n    lisen: 5000\n", `lbctl.yaml:3: unknown key "lisen" (in a service)`},
		{"missing template", "templates:\n  - source: " + filepath.Join(dir, "nope.tpl") + "\n    destination: /tmp/x.conf\n", "nope.tpl"},
		{"template syntax", "templates:\n  - source: " + tpl + "\n    destination: /tmp/x.conf\n", "bad.tpl:3"},
		{"bad port", "services:\n  - name: greeter\n    listen: 99999\n", "lbctl.yaml:3: services[0].listen"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := writeFile(t, t.TempDir(), "lbctl.yaml", tc.config)
			err := runValidate(&validateOptions{globalOptions: &globalOptions{configPath: cfg}, stdout: &bytes.Buffer{}})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestBadFlagsExitWithUsageError(t *testing.T) {
	for _, args := range [][]string{
		{"render", "--no-such-flag"},
		{"render", "--timeout", "-1s", "--config", "/dev/null"},
		{"render", "extra-arg"},
		{"--log-level", "loud", "render", "--config", "/dev/null", "--dry-run"},
	} {
		cmd := newRootCmd()
		cmd.SetArgs(args)
		cmd.SetOut(&bytes.Buffer{})
		cmd.SetErr(&bytes.Buffer{})
		err := cmd.Execute()
		if err == nil {
			t.Errorf("lbctl %v: want an error", args)
			continue
		}
		if code := exitCode(err); code == 0 {
			t.Errorf("lbctl %v: exit code 0 for %v", args, err)
		}
	}
}

// Without --once or --dry-run, render keeps watching Consul and hands every
// change to the reload controller: a running nginx serves it.
func TestRenderWatchReloadsNginxOnChange(t *testing.T) {
	c := testrig.StartConsul(t)
	a := testrig.StartGreeter(t, "alpha", "v1")
	b := testrig.StartGreeter(t, "beta", "v1")
	c.Register(a.Registration("greeter"))
	n := testrig.NewNginx(t)
	n.Start()
	lbPort := testrig.FreePort(t)
	lb := testrig.LoopbackAddr(lbPort)
	cfg := writeFile(t, t.TempDir(), "lbctl.yaml", fmt.Sprintf(
		"consul: {address: %q}\n%sservices: [{name: greeter, listen: %q}]\n", c.Addr, nginxYAML(n), lb))
	o, _ := renderOpts(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runRender(ctx, o) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("render watch ended with %v", err)
		}
	}()

	testrig.ExpectInstance(t, lb, "alpha", 10*time.Second)
	c.Register(b.Registration("greeter"))
	c.Deregister("greeter-alpha")
	testrig.ExpectOnly(t, lb, "beta", 10, 10*time.Second)
}

// No passing instance: the rendered config is one nginx accepts, and it
// answers every call at once with gRPC status UNAVAILABLE.
func TestRenderZeroInstancesAnswersUnavailable(t *testing.T) {
	c := testrig.StartConsul(t)
	n := testrig.NewNginx(t)
	lb := testrig.LoopbackAddr(testrig.FreePort(t))
	cfg := writeFile(t, t.TempDir(), "lbctl.yaml", fmt.Sprintf(
		"consul: {address: %q}\n%sservices: [{name: greeter, listen: %q}]\n", c.Addr, nginxYAML(n), lb))
	o, _ := renderOpts(cfg)
	o.once = true
	if err := runRender(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	n.Start()
	_, err := testrig.CallInstance(context.Background(), lb)
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "no healthy instances of greeter") {
		t.Fatalf("call with no instances: %v, want UNAVAILABLE naming the service", err)
	}
}

// In live mode the dry run also prints the upstreams it would push, and
// still writes nothing (not even the live directory).
func TestDryRunPrintsTheLivePushWithoutWriting(t *testing.T) {
	c := testrig.StartConsul(t)
	g := testrig.StartGreeter(t, "alpha", "v1")
	c.Register(g.Registration("greeter"))
	n := testrig.NewNginxWith(t, testrig.NginxOptions{Lua: true})
	liveDir := filepath.Join(t.TempDir(), "live")
	nginx := strings.TrimSuffix(nginxYAML(n), "}\n") + fmt.Sprintf(", live_upstreams: true, live_dir: %q}\n", liveDir)
	cfg := writeFile(t, t.TempDir(), "lbctl.yaml", fmt.Sprintf("consul: {address: %q}\n%sservices: [{name: greeter, listen: 5000}]\n", c.Addr, nginx))
	o, out := renderOpts(cfg)
	o.dryRun = true
	if err := runRender(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	port := g.Addr[strings.LastIndex(g.Addr, ":")+1:]
	for _, want := range []string{"balancer_by_lua_block", "==> live upstreams, pushed to unix:" + liveDir + "/live.sock", `"host": "127.0.0.1"`, `"port": ` + port} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("dry run printed:\n%s\nwant %q in it", out, want)
		}
	}
	if strings.Contains(out.String(), "server "+g.Addr) {
		t.Fatalf("the live config lists an instance:\n%s", out)
	}
	for _, p := range []string{filepath.Join(n.ConfD, "lbctl.conf"), liveDir} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Fatalf("dry run wrote %s", p)
		}
	}
}
