package config

import (
	"os"
	"strings"
	"testing"
)

// FuzzParse: any bytes as lbctl.yaml give a config or an error naming the
// file, never a panic; an accepted config validates again.
func FuzzParse(f *testing.F) {
	if shipped, err := os.ReadFile("../build/lbctl.yaml"); err == nil {
		f.Add(shipped)
	}
	for _, seed := range []string{
		"consul:\n  address: 127.0.0.1:8500\n  adress: x\n",
		"services:\n  - name: greeter\n    listen: 5000\n",
		"services:\n  - name: greeter\n    listen: 5000\n    tag: blue\n    shift: true\n    access_log: /tmp/a.log\n",
		"consul:\n  token: from-file\n",
		"programs:\n  - name: app\n    command: [app, --port, \"9000\"]\n    autorestart: sometimes\n    stopsignal: NOPE\n",
		"templates:\n  - source: t.ctmpl\n    destination: /etc/nginx/conf.d/t.conf\n",
		"register:\n  name: greeter\n  port: 7000\n  check:\n    type: grpc\n",
		"- a\n- b\n", "{", "services: [{name: &a x, listen: *a}]\n", "a: !!binary zz\n", "",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("lbctl.yaml", data, Options{})
		if err != nil {
			if cfg != nil || !strings.Contains(err.Error(), "lbctl.yaml") {
				t.Fatalf("error %q (config %v): want no config and an error naming lbctl.yaml", err, cfg != nil)
			}
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("accepted config fails Validate again: %v", err)
		}
	})
}
