package testrig

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Nginx is a real nginx run by a test with its own prefix, main config, pid
// file and error log; conf.d/*.conf under Dir is included in its http block.
type Nginx struct {
	Dir      string // prefix directory
	MainConf string // Dir/nginx.conf
	ConfD    string // Dir/conf.d, included by the main config
	PIDFile  string
	ErrorLog string
	Bin      string

	opts   NginxOptions
	t      testing.TB
	cmd    *exec.Cmd
	exited chan struct{}
}

// NginxBinary finds nginx ($LBCTL_NGINX, /usr/sbin/nginx, or PATH).
func NginxBinary(t testing.TB) string {
	return findBinary(t, "nginx", "LBCTL_NGINX", "/usr/sbin/nginx")
}

// NginxOptions are what a test may ask of the main config.
type NginxOptions struct {
	Lua     bool // load the lua module (and the NDK it needs): LuaModules
	Workers int  // worker_processes; 0 is 1
	// ShutdownTimeout is worker_shutdown_timeout: how long an old worker
	// keeps its connections after a reload before closing them; 0 is 30s.
	ShutdownTimeout time.Duration
}

// LuaModules are the dynamic modules Debian's libnginx-mod-http-lua installs,
// in load order.
var LuaModules = []string{
	"/usr/lib/nginx/modules/ndk_http_module.so",
	"/usr/lib/nginx/modules/ngx_http_lua_module.so",
}

// NewNginx prepares a prefix directory and main config without starting nginx;
// conf.d starts empty. Use Test to run `nginx -t` and Start to serve.
func NewNginx(t testing.TB) *Nginx {
	t.Helper()
	return NewNginxWith(t, NginxOptions{})
}

// NewNginxWith is NewNginx with options. Asking for Lua when the modules are
// not installed skips the test (fails it under CI), like a missing binary.
func NewNginxWith(t testing.TB, opts NginxOptions) *Nginx {
	t.Helper()
	if opts.Lua {
		for _, m := range LuaModules {
			if _, err := os.Stat(m); err != nil {
				msg := fmt.Sprintf("nginx lua module: %v (run scripts/install-deps.sh)", err)
				if os.Getenv("CI") != "" {
					t.Fatal(msg)
				}
				t.Skip(msg)
			}
		}
	}
	dir := t.TempDir()
	n := &Nginx{
		Dir: dir, MainConf: filepath.Join(dir, "nginx.conf"), ConfD: filepath.Join(dir, "conf.d"),
		PIDFile: filepath.Join(dir, "nginx.pid"), ErrorLog: filepath.Join(dir, "error.log"),
		Bin: NginxBinary(t), opts: opts, t: t,
	}
	if err := os.MkdirAll(n.ConfD, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(n.MainConf, []byte(n.mainConfig()), 0o644); err != nil {
		t.Fatal(err)
	}
	return n
}

func (n *Nginx) mainConfig() string {
	head := ""
	if os.Geteuid() == 0 {
		// Workers would drop to nobody, who cannot enter the test's 0700 temp dirs.
		head = "user root;\n"
	}
	if n.opts.Lua {
		for _, m := range LuaModules {
			head += "load_module " + m + ";\n"
		}
	}
	shutdown := n.opts.ShutdownTimeout
	if shutdown <= 0 {
		shutdown = 30 * time.Second
	}
	// worker_connections as build/nginx.conf: every listening socket takes
	// one, and the scale bench listens for 2,000 services.
	return head + fmt.Sprintf(`worker_processes %[2]d;
worker_shutdown_timeout %[3]dms;
error_log %[1]s/error.log notice;
pid %[1]s/nginx.pid;
events { worker_connections 16384; }
http {
    access_log off;
    client_body_temp_path %[1]s/client_body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    include %[1]s/conf.d/*.conf;
}
`, n.Dir, max(n.opts.Workers, 1), shutdown.Milliseconds())
}

// Args are the command-line arguments that point nginx at this prefix and config.
func (n *Nginx) Args() []string { return []string{"-p", n.Dir, "-c", n.MainConf} }

// Test runs `nginx -t` on the main config as it is now.
func (n *Nginx) Test() error {
	out, err := exec.Command(n.Bin, append(n.Args(), "-t", "-q")...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("nginx -t: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// TestWith writes conf.d/name and runs nginx -t. Unlike WriteConf it needs no
// testing.TB, so fuzz targets can use it.
func (n *Nginx) TestWith(name, content string) error {
	if err := os.WriteFile(filepath.Join(n.ConfD, name), []byte(content), 0o644); err != nil {
		return err
	}
	return n.Test()
}

// WriteConf writes conf.d/name, failing the test on error.
func (n *Nginx) WriteConf(name, content string) string {
	n.t.Helper()
	p := filepath.Join(n.ConfD, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		n.t.Fatal(err)
	}
	return p
}

// Start runs nginx in the foreground (daemon off) as a child of the test and
// waits until its pid file names it. It is stopped when the test ends.
func (n *Nginx) Start() {
	n.t.Helper()
	cmd := exec.Command(n.Bin, append(n.Args(), "-g", "daemon off;")...)
	out, err := os.OpenFile(filepath.Join(n.Dir, "stdout.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		n.t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		n.t.Fatalf("start nginx: %v", err)
	}
	n.cmd, n.exited = cmd, make(chan struct{})
	go func(done chan struct{}) { cmd.Wait(); out.Close(); close(done) }(n.exited)
	n.t.Cleanup(n.Stop)
	WaitFor(n.t, 10*time.Second, "nginx to start", func() error {
		select {
		case <-n.exited:
			return fmt.Errorf("nginx exited: %s%s", logTail(filepath.Join(n.Dir, "stdout.log"), 2000), logTail(n.ErrorLog, 2000))
		default:
		}
		pid, err := n.readPID()
		if err != nil {
			return err
		}
		if pid != cmd.Process.Pid {
			return fmt.Errorf("pid file says %d, want %d", pid, cmd.Process.Pid)
		}
		return nil
	})
}

func (n *Nginx) readPID() (int, error) {
	b, err := os.ReadFile(n.PIDFile)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// PID is the nginx master's pid (0 when not started).
func (n *Nginx) PID() int {
	if n.cmd == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

// Stop ends nginx gracefully (QUIT), escalating to KILL after 10 s.
func (n *Nginx) Stop() {
	if n.cmd == nil {
		return
	}
	n.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-n.exited:
	case <-time.After(10 * time.Second):
		syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
		<-n.exited
	}
	n.cmd = nil
}

// ErrorLogText is the whole error log, for assertions and failure messages.
func (n *Nginx) ErrorLogText() string {
	b, _ := os.ReadFile(n.ErrorLog)
	return string(b)
}
