package supervisor

import (
	"testing"
	"time"
)

func TestStartedUpWaitsForEveryAutostartProgram(t *testing.T) {
	up := prog("up", "exec sleep 100")
	up.StartSecs = 50 * time.Millisecond
	gated := prog("gated", "exec sleep 100")
	gated.Gates = []string{"first-render"}
	manual := prog("manual", "exec sleep 100")
	manual.Autostart = false
	h := start(t, up, gated, manual)
	h.waitState("up", Running)
	if h.sup.StartedUp() {
		t.Fatal("StartedUp while gated still waits for its gate")
	}
	h.sup.OpenGate("first-render")
	h.waitUntil("started up", h.sup.StartedUp)
	for _, name := range []string{"up", "gated"} {
		if st, _ := h.sup.StatusOf(name); st.State != Running {
			t.Errorf("%s is %s once started up, want RUNNING", name, st.State)
		}
	}
	if st, _ := h.sup.StatusOf("manual"); st.State != Stopped {
		t.Errorf("manual is %s, want STOPPED (no autostart)", st.State)
	}
}

func TestStartedUpIsFalseBeforeRun(t *testing.T) {
	sup, err := New([]Program{prog("a", "exec sleep 100")}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if sup.StartedUp() {
		t.Fatal("StartedUp before Run")
	}
}
