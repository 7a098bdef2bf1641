package reload

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lbctl/lbctl/internal/testrig"
)

// The main config shipped in the image passes nginx -t, with a rendered
// services file validated through the controller's shadow copy of it.
func TestShippedMainConfigValidates(t *testing.T) {
	bin := testrig.NginxBinary(t)
	shipped, err := os.ReadFile("../build/nginx.conf")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, d := range []string{"conf.d", "log"} {
		os.Mkdir(filepath.Join(dir, d), 0o755)
	}
	conf := strings.NewReplacer("/etc/nginx/", dir+"/", "/var/log/nginx/", dir+"/log/", "/run/", dir+"/").Replace(string(shipped))
	if os.Geteuid() == 0 {
		conf = "user root;\n" + conf
	}
	main := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(main, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "-p", dir, "-c", main, "-t").CombinedOutput(); err != nil || strings.Contains(string(out), "[warn]") {
		t.Fatalf("nginx -t on build/nginx.conf: %v\n%s", err, out)
	}
	dest := filepath.Join(dir, "conf.d", "lbctl.conf")
	ctl := New(Options{Nginx: nginxConfigOf(bin, main, dir, filepath.Join(dir, "nginx.pid"))})
	good := "upstream u { server 127.0.0.1:1; }\nserver { listen 127.0.0.1:1 http2; location / { grpc_pass grpc://u; } }\n"
	if res, err := ctl.Apply(context.Background(), update(dest, good, "builtin")); err != nil || res.Outcome != Written {
		t.Fatalf("good render: %+v, %v", res, err)
	}
	res, err := ctl.Apply(context.Background(), update(dest, good+"http2 on;\n", "builtin"))
	if res.Outcome != Rejected || !strings.Contains(err.Error(), dest+":3") {
		t.Fatalf("nginx 1.25's `http2 on;`: %+v, %v; want rejected at %s:3", res, err, dest)
	}
}
