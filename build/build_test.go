// Package build_test checks the images and docker-compose.yaml without a
// Docker engine: every file a Dockerfile copies exists, every command it runs
// is one these tests run too (the go builds are run here, verbatim), the
// configs the image ships pass lbctl's validation and a real nginx -t, and
// the compose file passes a real compose parser.
package build_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"gopkg.in/yaml.v3"

	"github.com/lbctl/lbctl/catalog"
	"github.com/lbctl/lbctl/config"
	"github.com/lbctl/lbctl/internal/freeport"
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
			Image         string
			ContainerName string `yaml:"container_name"`
			Ports         []any
			Command       any
			Environment   map[string]string
			DependsOn     map[string]any `yaml:"depends_on"`
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
	// No single Consul server is a point of failure: lbctl in every
	// container talks to its own agent (TestImagesRunALocalConsulAgent),
	// never to one named server, and no container waits for one to start.
	for _, name := range []string{"lb", "greeter-blue", "greeter-green"} {
		if addr, ok := s[name].Environment["CONSUL_HTTP_ADDR"]; ok {
			t.Errorf("%s: CONSUL_HTTP_ADDR=%s: lbctl must use the container's own agent (127.0.0.1:8500)", name, addr)
		}
		for dep := range s[name].DependsOn {
			if strings.HasPrefix(dep, "consul-") {
				t.Errorf("%s depends on %s alone: it cannot start while that server is down", name, dep)
			}
		}
	}
	for _, name := range []string{"consul-1", "consul-2", "consul-3"} {
		if s[name].Image != consulImage {
			t.Errorf("%s runs %q; the images' agents are %s (keep them one version)", name, s[name].Image, consulImage)
		}
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

// consulImage is the official image the servers run and the images take
// their agent's binary from.
const consulImage = "hashicorp/consul:1.21.0"

// Each image runs a local Consul client agent as one of lbctl run's programs
// (its binary copied from consulImage) that joins all three servers, and
// lbctl talks to it: the agent's command line is run here for real (with
// test ports and no servers to join) and must answer. In the app image the
// agent starts before lbctl register, so it is stopped after it, once the
// drain is done.
func TestImagesRunALocalConsulAgent(t *testing.T) {
	for df, conf := range map[string]string{"Dockerfile.lb": "lbctl.yaml", "Dockerfile.app": "app.yaml"} {
		froms := instructions(t, df, "FROM")
		if !slices.Contains(froms, consulImage+" AS consul") {
			t.Errorf("%s: no stage FROM %s AS consul: %v", df, consulImage, froms)
		}
		if copies := instructions(t, df, "COPY"); !slices.Contains(copies, "--from=consul /bin/consul /usr/local/bin/consul") {
			t.Errorf("%s does not copy the agent from the consul stage: %v", df, copies)
		}
		if conf == "app.yaml" && !slices.Contains(instructions(t, df, "COPY"), "build/app.yaml /etc/lbctl/lbctl.yaml") {
			t.Errorf("%s does not ship build/app.yaml", df)
		}
		cfg, err := config.Load(conf, config.Options{Env: func(string) (string, bool) { return "", false }})
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Consul.HostPort() != "127.0.0.1:8500" {
			t.Errorf("%s: lbctl talks to %s, want the local agent 127.0.0.1:8500", conf, cfg.Consul.HostPort())
		}
		i := slices.IndexFunc(cfg.Programs, func(p config.Program) bool { return p.Name == "consul" })
		if i < 0 {
			t.Fatalf("%s: no consul program", conf)
		}
		agent := cfg.Programs[i]
		for _, want := range []string{"/usr/local/bin/consul", "agent", "-client=127.0.0.1", "-retry-join=consul-1", "-retry-join=consul-2", "-retry-join=consul-3"} {
			if !slices.Contains(agent.Command, want) {
				t.Errorf("%s: the agent's command %q lacks %s", conf, agent.Command, want)
			}
		}
		if conf == "app.yaml" {
			j := slices.IndexFunc(cfg.Programs, func(p config.Program) bool { return slices.Contains(p.Command, "register") })
			if j < i {
				t.Errorf("%s: lbctl register must be listed (started) after the agent, to be stopped before it", conf)
			}
		}
		runAgent(t, conf, agent.Command[1:])
	}
}

// runAgent runs the real consul with the image's agent arguments, bound to
// loopback on free ports, and waits for it to answer.
func runAgent(t *testing.T, conf string, args []string) {
	t.Helper()
	ports := make([]int, 3)
	for i := range ports {
		p, err := freeport.Get()
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = p
	}
	var fixed []string
	for _, a := range args {
		if !strings.HasPrefix(a, "-bind=") && !strings.HasPrefix(a, "-retry-join=") && !strings.HasPrefix(a, "-data-dir=") {
			fixed = append(fixed, a)
		}
	}
	fixed = append(fixed, "-bind=127.0.0.1", "-data-dir="+t.TempDir(), fmt.Sprintf("-http-port=%d", ports[0]),
		fmt.Sprintf("-serf-lan-port=%d", ports[1]), fmt.Sprintf("-server-port=%d", ports[2]),
		"-grpc-port=-1", "-grpc-tls-port=-1", "-serf-wan-port=-1")
	cmd := exec.Command(testrig.ConsulBinary(t), fixed...)
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	defer func() { cmd.Process.Kill(); <-done }()
	client, err := api.NewClient(&api.Config{Address: fmt.Sprintf("127.0.0.1:%d", ports[0])})
	if err != nil {
		t.Fatal(err)
	}
	if err := testrig.Poll(30*time.Second, func() error {
		select {
		case <-done:
			return fmt.Errorf("exited")
		default:
		}
		_, err := client.Agent().Self()
		return err
	}); err != nil {
		t.Fatalf("%s: consul %s: %v\n%s", conf, strings.Join(fixed, " "), err, logs.String())
	}
}
