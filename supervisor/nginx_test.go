package supervisor

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lbctl/lbctl/internal/testrig"
)

// nginx the way lbctl runs it: foreground, QUIT to stop gracefully, its
// master's pid handed to whoever reloads it.
func TestRealNginxUnderTheSupervisor(t *testing.T) {
	n := testrig.NewNginx(t)
	n.WriteConf("hello.conf", fmt.Sprintf("server { listen 127.0.0.1:%d; return 200 hello; }\n", testrig.FreePort(t)))
	p := prog("nginx", "")
	p.Command = append(append([]string{n.Bin}, n.Args()...), "-g", "daemon off;")
	p.StopSignal, p.StartSecs = syscall.SIGQUIT, 200*time.Millisecond
	h := start(t, p)
	pids := h.sup.WatchPID("nginx")
	master := h.waitState("nginx", Running).PID
	if got := waitPID(t, pids, func(pid int) bool { return pid != 0 }); got != master {
		t.Errorf("WatchPID = %d, status pid %d", got, master)
	}
	testrig.WaitFor(t, 10*time.Second, "pid file", func() error {
		data, err := os.ReadFile(n.PIDFile)
		if err != nil || strings.TrimSpace(string(data)) != strconv.Itoa(master) {
			return fmt.Errorf("pid file %q, want %d", data, master)
		}
		return nil
	})
	if err := h.sup.Signal(context.Background(), "nginx", syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testrig.WaitFor(t, 10*time.Second, "reload", func() error {
		if data, _ := os.ReadFile(n.ErrorLog); !strings.Contains(string(data), "reconfiguring") {
			return fmt.Errorf("error log: %s", data)
		}
		return nil
	})
	if err := h.sup.Stop(context.Background(), "nginx"); err != nil {
		t.Fatal(err)
	}
	st, _ := h.sup.StatusOf("nginx")
	if st.State != Stopped || st.LastExit == nil || st.LastExit.Code != 0 {
		t.Errorf("after QUIT: %+v, want STOPPED with exit 0 (graceful)", st)
	}
	if data, _ := os.ReadFile(n.ErrorLog); !strings.Contains(string(data), "gracefully shutting down") {
		t.Errorf("no graceful shutdown in the error log:\n%s", data)
	}
}
