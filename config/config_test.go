package config

import (
	"fmt"
	"strings"
	"testing"
)

func TestUnknownKeyNamesKeyAndLine(t *testing.T) {
	_, err := Parse("lbctl.yaml", []byte("consul:\n  address: 127.0.0.1:8500\n  adress: x\n"), Options{})
	if err == nil {
		t.Fatal("want an error for an unknown key")
	}
	want := `lbctl.yaml:3: unknown key "adress" (in consul)`
	if err.Error() != want {
		t.Fatalf("error = %q, want %q", err, want)
	}
}

func TestValidationErrorNamesLine(t *testing.T) {
	src := "services:\n  - name: greeter\n    listen: 5000\n  - name: other\n    listen: 70000\n"
	_, err := Parse("lbctl.yaml", []byte(src), Options{})
	if err == nil || !strings.Contains(err.Error(), "lbctl.yaml:5: services[1].listen:") {
		t.Fatalf("error = %v, want it at lbctl.yaml:5 services[1].listen", err)
	}
}

func TestMinimalServiceGetsDefaults(t *testing.T) {
	cfg, err := Parse("lbctl.yaml", []byte("services:\n  - name: greeter\n    listen: 5000\n"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.Services[0]
	if s.Listen != "5000" || s.Keepalive != 32 || cfg.Nginx.ServicesConf == "" || cfg.Consul.Address == "" {
		t.Fatalf("defaults not filled: %+v %+v", s, cfg.Nginx)
	}
}

func TestConsulLayersEnvFileFlags(t *testing.T) {
	env := map[string]string{"CONSUL_HTTP_ADDR": "10.0.0.1:8500", "CONSUL_HTTP_TOKEN": "from-env", "CONSUL_HTTP_SSL": "true"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	cfg, err := Parse("f", []byte("consul:\n  token: from-file\n"), Options{Env: lookup, ConsulFlags: Consul{Address: "127.0.0.1:9999"}})
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Consul
	if c.Address != "127.0.0.1:9999" || c.Token.Reveal() != "from-file" || !c.UseSSL() {
		t.Fatalf("layering wrong: address %q token %q ssl %v", c.Address, c.Token.Reveal(), c.UseSSL())
	}
}

func TestSecretNeverPrints(t *testing.T) {
	s := Secret("s3cr3t")
	for _, got := range []string{s.String(), s.LogValue().String(), fmt.Sprintf("%v %s", s, s)} {
		if strings.Contains(got, "s3cr3t") {
			t.Fatalf("secret leaked: %q", got)
		}
	}
}
