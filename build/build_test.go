// Package build_test checks the images and docker-compose.yaml without a
// Docker engine: every file a Dockerfile copies exists, every command it runs
// is one these tests run too (the go builds are run here, verbatim), the
// configs the image ships pass lbctl's validation and a real nginx -t, and
// the compose file passes a real compose parser.
package build_test

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/lbctl/lbctl/catalog"
	"github.com/lbctl/lbctl/config"
	"github.com/lbctl/lbctl/internal/testrig"
	"github.com/lbctl/lbctl/render"
)

const repo = ".."

var dockerfiles = []string{"Dockerfile.lb", "Dockerfile.app"}

// instructions returns a Dockerfile's instructions of one kind, with line
// continuations joined.
func instructions(t *testing.T, file, kind string) []string {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	var cur strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if cur.Len() == 0 && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if strings.HasSuffix(line, "\\") {
			cur.WriteString(strings.TrimSuffix(line, "\\") + " ")
			continue
		}
		cur.WriteString(line)
		full := cur.String()
		cur.Reset()
		if word, rest, _ := strings.Cut(full, " "); strings.EqualFold(word, kind) {
			out = append(out, strings.Join(strings.Fields(rest), " "))
		}
	}
	return out
}

func TestDockerfileCopiesExist(t *testing.T) {
	for _, df := range dockerfiles {
		for _, c := range instructions(t, df, "COPY") {
			if strings.HasPrefix(c, "--from=") {
				continue
			}
			fields := strings.Fields(c)
			for _, src := range fields[:len(fields)-1] {
				if _, err := os.Stat(filepath.Join(repo, src)); err != nil {
					t.Errorf("%s: COPY %s: %v", df, src, err)
				}
			}
		}
	}
}

var goBuild = regexp.MustCompile(`^CGO_ENABLED=0 go build (.*)-o /out/(\S*) (.+)$`)

// Every RUN is a command this suite runs too: the go builds are run here as
// written; go mod download happens in every go build; nginx-light is what
// scripts/install-deps.sh installs for the tests.
func TestDockerfileRunsAreTested(t *testing.T) {
	installDeps, err := os.ReadFile(filepath.Join(repo, "scripts/install-deps.sh"))
	if err != nil {
		t.Fatal(err)
	}
	for _, df := range dockerfiles {
		for _, run := range instructions(t, df, "RUN") {
			switch {
			case run == "go mod download":
			case strings.Contains(run, "apt-get install") && strings.Contains(run, "nginx-light"):
				for _, pkg := range []string{"nginx-light", "libnginx-mod-http-lua", "lua-cjson"} {
					if strings.Contains(run, pkg) && !strings.Contains(string(installDeps), pkg) {
						t.Errorf("%s installs %s but the tests do not", df, pkg)
					}
				}
			case goBuild.MatchString(run):
				runGoBuild(t, df, run)
			default:
				t.Errorf("%s: RUN %q is not a command the tests run; add it here", df, run)
			}
		}
	}
}

// runGoBuild runs a Dockerfile's go build line as written, through sh like
// Docker does, with only its /out/ directory moved into a temp dir, and
// returns that dir.
func runGoBuild(t *testing.T, df, run string) string {
	t.Helper()
	out := shBuild(t, df, run)
	m := goBuild.FindStringSubmatch(run)
	for _, pkg := range strings.Fields(m[3]) {
		bin := filepath.Join(out, filepath.Base(pkg))
		if m[2] != "" {
			bin = filepath.Join(out, m[2])
		}
		if _, err := os.Stat(bin); err != nil {
			t.Errorf("%s: %s built no %s", df, run, bin)
		}
	}
	return out
}

// shBuild runs a build command through sh, in the repository, with its
// /out/ directory moved into a temp dir, and returns that dir.
func shBuild(t *testing.T, what, run string) string {
	t.Helper()
	out := t.TempDir()
	cmd := exec.Command("sh", "-c", strings.ReplaceAll(run, "/out/", out+"/"))
	cmd.Dir = repo
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %s: %v\n%s", what, run, err, b)
	}
	return out
}

// The image's lbctl.yaml is valid, and build/nginx.conf with what lbctl
// renders from it passes a real nginx -t (paths moved into a temp prefix).
func TestImageConfigsAreValid(t *testing.T) {
	cfg, err := config.Load("lbctl.yaml", config.Options{})
	if err != nil {
		t.Fatal(err)
	}
	snap := catalog.Snapshot{Instances: map[catalog.Query][]catalog.Instance{}}
	for _, q := range render.Queries(cfg.Services) {
		snap.Instances[q] = []catalog.Instance{{ID: "greeter-1", Node: "n", Address: "10.0.0.1", Port: 7000, Tags: []string{"blue"}}}
	}
	if !cfg.Nginx.LiveUpstreams {
		t.Fatal("the image's lbctl.yaml turns live upstreams off")
	}
	rendered, set, problems := render.NewLiveRenderer(nil, *render.LiveOf(cfg.Nginx)).RenderLive(cfg.Services, snap, nil)
	if len(problems) > 0 || len(set) != len(cfg.Services) {
		t.Fatalf("render problems: %v; live upstreams %v", problems, set)
	}
	main, err := os.ReadFile("nginx.conf")
	if err != nil {
		t.Fatal(err)
	}
	n := testrig.NewNginx(t)
	moved := strings.NewReplacer("/etc/nginx/conf.d/", n.ConfD+"/", "/run/nginx.pid", n.PIDFile,
		"/var/log/nginx/", n.Dir+"/", cfg.Nginx.LiveDir+"/", n.Dir+"/")
	if err := os.WriteFile(n.MainConf, []byte(moved.Replace(string(main))), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := n.TestWith("lbctl.conf", moved.Replace(string(rendered))); err != nil {
		t.Fatal(err)
	}
}

// docker-compose.yaml parses with a real compose parser, and has what the
// README promises: 3 Consul servers with the UI on 8500, the LB on 5000,
// greeter-blue and greeter-green scalable (no fixed names or host ports).
func TestComposeFile(t *testing.T) {
	bin, err := exec.LookPath("docker-compose")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("docker-compose not installed (scripts/install-deps.sh installs it)")
		}
		t.Skip("docker-compose not installed (scripts/install-deps.sh installs it)")
	}
	cmd := exec.Command(bin, "-f", "docker-compose.yaml", "config")
	cmd.Dir = repo
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("docker-compose config: %v\n%s", err, out)
	}
	var compose struct {
		Services map[string]struct {
			Build         *struct{ Dockerfile string }
			ContainerName string `yaml:"container_name"`
			Ports         []any
			Command       any
		}
	}
	if err := yaml.Unmarshal(out, &compose); err != nil {
		t.Fatalf("parse the normalized compose file: %v", err)
	}
	s := compose.Services
	for _, name := range []string{"consul-1", "consul-2", "consul-3", "lb", "greeter-blue", "greeter-green"} {
		if _, ok := s[name]; !ok {
			t.Errorf("service %s missing", name)
		}
	}
	ports := func(name string) string { b, _ := json.Marshal(s[name].Ports); return string(b) }
	if !strings.Contains(ports("consul-1"), "8500") || !strings.Contains(ports("lb"), "5000") {
		t.Errorf("want the Consul UI on 8500 and the LB on 5000: consul-1 %s, lb %s", ports("consul-1"), ports("lb"))
	}
	for _, g := range []string{"greeter-blue", "greeter-green"} {
		if s[g].ContainerName != "" || len(s[g].Ports) != 0 {
			t.Errorf("%s cannot scale: container_name %q, ports %s", g, s[g].ContainerName, ports(g))
		}
		if s[g].Build == nil || s[g].Build.Dockerfile != "build/Dockerfile.app" {
			t.Errorf("%s: want build/Dockerfile.app", g)
		}
	}
}
