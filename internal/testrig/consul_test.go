package testrig

import (
	"fmt"
	"testing"
)

func TestConsulAgentServesCatalog(t *testing.T) {
	c := StartConsul(t)
	g := StartGreeter(t, "alpha", "v1")
	c.Register(g.Registration("greeter", "blue"))
	entries, _, err := c.Client.Health().Service("greeter", "blue", true, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Service.Port != g.Port {
		t.Fatalf("got %d entries, want the one greeter on port %d", len(entries), g.Port)
	}
}

func TestRecordingClientKeepsHealthAnswers(t *testing.T) {
	c := StartConsul(t)
	g := StartGreeter(t, "alpha", "v1")
	c.Register(g.Registration("greeter"))
	client, answers := c.RecordingClient()
	if _, _, err := client.Health().Service("greeter", "", true, nil); err != nil {
		t.Fatal(err)
	}
	got := answers.List()
	want := fmt.Sprintf("[greeter-alpha 127.0.0.1:%d on lbctl-test, checks serfHealth=passing]", g.Port)
	if len(got) != 1 || got[0].Status != 200 || got[0].Index == "" || got[0].KnownLeader != "true" || got[0].Body != want {
		t.Fatalf("kept %v, want one answer with its index, known leader and %s", got, want)
	}
}
