package config

import (
	"strings"
	"testing"
)

func TestShiftAndAccessLogKeys(t *testing.T) {
	cfg, err := Parse("t.yaml", []byte("services:\n  - {name: greeter, tag: blue, listen: 5000, shift: true, access_log: /var/log/nginx/lbctl-grpc.log}\n"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if s := cfg.Services[0]; !s.Shift || s.AccessLog != "/var/log/nginx/lbctl-grpc.log" {
		t.Fatalf("%+v", s)
	}
	for _, bad := range []string{"relative.log", "/var/log/x.log;", "/var/log/a b.log", "/x/{y}"} {
		_, err := Parse("t.yaml", []byte("services:\n  - name: greeter\n    listen: 5000\n    access_log: \""+bad+"\"\n"), Options{})
		if err == nil || !strings.Contains(err.Error(), "t.yaml:4: services[0].access_log") {
			t.Errorf("access_log %q: %v", bad, err)
		}
	}
}
