package config

import (
	"strings"
	"testing"
	"time"
)

func TestRegisterSectionGetsDefaults(t *testing.T) {
	cfg, err := Parse("lbctl.yaml", []byte("register:\n  name: lb\n  port: 5000\n  tags: [edge]\n"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	r := cfg.Register
	if r == nil || r.Check.Type != "grpc" || r.Check.Interval != 2*time.Second || r.Check.TTL != 10*time.Second ||
		r.Drain.Mode != "maintenance" || r.Drain.Timeout != 30*time.Second {
		t.Fatalf("defaults not filled: %+v", r)
	}
	if DefaultRegister().Check != r.Check {
		t.Fatal("DefaultRegister and a defaulted section differ")
	}
}

func TestRegisterErrorsNameTheLine(t *testing.T) {
	cases := map[string]string{
		"register:\n  name: lb\n  port: 70000\n":                                         "lbctl.yaml:3: register.port: want a port 1-65535, got 70000",
		"register:\n  name: lb\n  port: 5000\n  check:\n    type: icmp\n":                `lbctl.yaml:5: register.check.type: want one of [grpc http tcp ttl], got "icmp"`,
		"register:\n  name: lb\n  port: 5000\n  drain:\n    mode: nap\n":                 `lbctl.yaml:5: register.drain.mode: want one of [maintenance deregister], got "nap"`,
		"register:\n  name: lb\n  port: 5000\n  weight: 0\n  meta:\n    weight: \"3\"\n": "lbctl.yaml:6: register.meta: set the weight with weight:, not meta",
		"register:\n  name: lb\n  port: 5000\n  chek: {}\n":                              `lbctl.yaml:4: unknown key "chek" (in register)`,
		"register:\n  name: lb\n  port: 5000\n  check:\n    intervl: 1s\n":               `lbctl.yaml:5: unknown key "intervl" (in registercheck)`,
	}
	for src, want := range cases {
		_, err := Parse("lbctl.yaml", []byte(src), Options{})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error = %v\nwant it to contain %q", err, want)
		}
	}
}

func TestRegisterValidateOutsideAFile(t *testing.T) {
	r := DefaultRegister()
	r.Name, r.Port = "g", 0
	if err := r.Validate(); err == nil || err.Error() != "register.port: want a port 1-65535, got 0" {
		t.Fatalf("Validate = %v", err)
	}
}
