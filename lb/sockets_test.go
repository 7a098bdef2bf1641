package lb

import (
	"fmt"
	"net"
	"testing"

	"github.com/lbctl/lbctl/config"
	"github.com/lbctl/lbctl/internal/testrig"
	"github.com/lbctl/lbctl/supervisor"
)

// fakeSupervisor runs nginx as far as the load balancer can tell, and keeps
// the BeforeStart hook for the test to call as a start would.
type fakeSupervisor struct {
	hook func() (supervisor.Extras, error)
}

func (f *fakeSupervisor) StatusOf(name string) (supervisor.Status, error) {
	return supervisor.Status{Name: name}, nil
}
func (f *fakeSupervisor) PID(string) int           { return 0 }
func (f *fakeSupervisor) Changes() <-chan struct{} { return nil }
func (f *fakeSupervisor) OpenGate(string)          {}
func (f *fakeSupervisor) BeforeStart(_ string, hook func() (supervisor.Extras, error)) {
	f.hook = hook
}

func servicesConfig(t *testing.T, listens ...string) *config.Config {
	t.Helper()
	src := "consul: {address: 127.0.0.1:1}\nservices:\n"
	for i, l := range listens {
		src += fmt.Sprintf("  - {name: s%d, listen: %q}\n", i, l)
	}
	cfg, err := config.Parse("lbctl.yaml", []byte(src), config.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func accepts(addr string) bool {
	c, err := net.Dial("tcp", addr)
	if err == nil {
		c.Close()
	}
	return err == nil
}

// Each nginx start gets the services' sockets, in order, with the NGINX
// variable naming their fds; a listen on a host name is left to nginx; a
// service removed by SIGHUP has its port closed at once.
func TestNginxStartGetsTheServicesSocketsAndARemovedServiceItsPortClosed(t *testing.T) {
	a, b := testrig.LoopbackAddr(testrig.FreePort(t)), testrig.LoopbackAddr(testrig.FreePort(t))
	cfg := servicesConfig(t, a, b, fmt.Sprintf("localhost:%d", testrig.FreePort(t)))
	sup := &fakeSupervisor{}
	l, err := New(cfg, Options{Supervisor: sup})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.closeSockets)
	extras, err := sup.hook()
	if err != nil || len(extras.Files) != 2 || len(extras.Env) != 1 || extras.Env[0] != "NGINX=3;4;" {
		t.Fatalf("extras %+v, %v; want two sockets and NGINX=3;4;", extras, err)
	}
	if !accepts(a) || !accepts(b) {
		t.Fatalf("%s and %s not both listening", a, b)
	}
	if _, err := l.Reconfigure(servicesConfig(t, b)); err != nil {
		t.Fatal(err)
	}
	if accepts(a) {
		t.Errorf("%s still accepts after its service was removed", a)
	}
	if again, err := sup.hook(); err != nil || len(again.Files) != 1 || again.Files[0] != extras.Files[1] {
		t.Errorf("next start: %+v, %v; want b's socket, the same one", again, err)
	}
}
