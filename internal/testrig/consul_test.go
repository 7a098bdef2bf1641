package testrig

import (
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
