package build_test

import (
	"context"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lbctl/lbctl/internal/testrig"
)

// lbctlBuilds are the ways lbctl is built and must run: the image's build
// line from Dockerfile.lb, verbatim (a static executable), and the same as a
// position-independent executable, as several distributions build Go
// packages (cgo as the environment has it, like a plain go build).
func lbctlBuilds(t *testing.T) map[string]string {
	t.Helper()
	var image string
	for _, run := range instructions(t, "Dockerfile.lb", "RUN") {
		if m := goBuild.FindStringSubmatch(run); m != nil && m[2] == "lbctl" {
			image = run
		}
	}
	if image == "" {
		t.Fatal("Dockerfile.lb builds no /out/lbctl")
	}
	return map[string]string{
		"static": image,
		"pie":    strings.Replace(image, "CGO_ENABLED=0 go build ", "go build -buildmode=pie ", 1),
	}
}

// A built lbctl, static and PIE, runs the whole way: start-up (nginx gated on
// the first render), the first render served, start-up memory released, a
// change in Consul applied by an nginx reload, and a clean stop on SIGTERM.
func TestBuiltLbctlStartsRendersReloadsAndStops(t *testing.T) {
	for name, build := range lbctlBuilds(t) {
		t.Run(name, func(t *testing.T) {
			bin := filepath.Join(shBuild(t, name, build), "lbctl")
			if exeType(t, bin) != map[string]elf.Type{"static": elf.ET_EXEC, "pie": elf.ET_DYN}[name] {
				t.Fatalf("%s: %s built a %v ELF file", name, build, exeType(t, bin))
			}
			runBuiltLbctl(t, bin)
		})
	}
}

func exeType(t *testing.T, bin string) elf.Type {
	t.Helper()
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return f.Type
}

func runBuiltLbctl(t *testing.T, bin string) {
	c := testrig.StartConsul(t)
	a := testrig.StartGreeter(t, "alpha", "v1")
	b := testrig.StartGreeter(t, "beta", "v1")
	c.Register(a.Registration("greeter"))
	n := testrig.NewNginx(t)
	lb := testrig.LoopbackAddr(testrig.FreePort(t))
	httpAddr := testrig.LoopbackAddr(testrig.FreePort(t))
	dir := t.TempDir()
	cfg := filepath.Join(dir, "lbctl.yaml")
	err := os.WriteFile(cfg, []byte(fmt.Sprintf(`consul: {address: %q}
nginx: {binary: %q, config: %q, prefix: %q, pid_file: %q, error_log: %q, services_conf: %q}
control: {socket: %q}
http: {address: %q}
services: [{name: greeter, listen: %q}]
programs:
  - name: nginx
    command: [%q, -p, %q, -c, %q, -g, "daemon off;"]
    wait_for_gates: [first-render]
    stopsignal: QUIT
    essential: true
`, c.Addr, n.Bin, n.MainConf, n.Dir, n.PIDFile, n.ErrorLog, filepath.Join(n.ConfD, "lbctl.conf"),
		filepath.Join(dir, "lbctl.sock"), httpAddr, lb, n.Bin, n.Dir, n.MainConf)), 0o644)
	if err != nil {
		t.Fatal(err)
	}

	var log testrig.LogBuffer
	cmd := exec.Command(bin, "run", "-c", cfg, "--log-level", "info")
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	running := func() {
		select {
		case <-exited:
			t.Fatalf("lbctl exited (%v); its log:\n%s", cmd.ProcessState, log.String())
		default:
		}
	}

	testrig.ExpectInstance(t, lb, "alpha", 15*time.Second)
	testrig.WaitFor(t, 15*time.Second, "lbctl to release its start-up memory", func() error {
		running()
		if !strings.Contains(log.String(), "released start-up memory") {
			return fmt.Errorf("not logged yet")
		}
		return nil
	})

	c.Register(b.Registration("greeter"))
	c.Deregister("greeter-alpha")
	testrig.ExpectOnly(t, lb, "beta", 10, 15*time.Second)
	testrig.WaitFor(t, 10*time.Second, "a reload applied", func() error {
		running()
		applied, err := testrig.Metric(httpAddr, `lbctl_reloads_total{outcome="applied"}`)
		if err == nil && applied < 1 {
			err = fmt.Errorf("lbctl_reloads_total{outcome=\"applied\"} = %v", applied)
		}
		return err
	})
	running()

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("lbctl did not stop on SIGTERM; its log:\n%s", log.String())
	}
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("lbctl exited %d (%v) on SIGTERM; its log:\n%s", code, cmd.ProcessState, log.String())
	}
	if _, err := testrig.CallInstance(context.Background(), lb); err == nil {
		t.Fatal("nginx still answers after lbctl stopped")
	}
	for line := range strings.Lines(log.String()) {
		if strings.Contains(line, "released start-up memory") {
			t.Log(strings.TrimSpace(line))
		}
	}
}
