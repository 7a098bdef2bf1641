package render

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lbctl/lbctl/catalog"
	"github.com/lbctl/lbctl/config"
	"github.com/lbctl/lbctl/internal/testrig"
	"github.com/lbctl/lbctl/internal/trafficsplit"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

// goldenCase is one input snapshot: an lbctl.yaml, the passing instances
// Consul returns for each query ("name" or "name|tag"), and the traffic
// splits KV holds (unchecked, as Consul would return them).
type goldenCase struct {
	Config    string                        `json:"config"`
	Instances map[string][]catalog.Instance `json:"instances"`
	Splits    map[string]trafficsplit.Split `json:"splits"`
}

// fakeResolver resolves a fixed set of host names, so goldens are stable.
func fakeResolver(host string) ([]string, error) {
	known := map[string][]string{
		"localhost":        {"::1", "127.0.0.1"},
		"backend.internal": {"10.0.0.7"},
	}
	if ips, ok := known[host]; ok {
		return ips, nil
	}
	return nil, fmt.Errorf("no such host")
}

func loadGoldenCase(t testing.TB, path string) ([]config.Service, catalog.Snapshot) {
	services, snap, _ := loadGoldenCaseSplits(t, path)
	return services, snap
}

func loadGoldenCaseSplits(t testing.TB, path string) ([]config.Service, catalog.Snapshot, map[string]trafficsplit.Split) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var gc goldenCase
	if err := json.Unmarshal(raw, &gc); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	cfg, err := config.Parse(path, []byte(gc.Config), config.Options{})
	if err != nil {
		t.Fatal(err)
	}
	snap := catalog.Snapshot{Instances: map[catalog.Query][]catalog.Instance{}}
	for key, instances := range gc.Instances {
		name, tag, _ := strings.Cut(key, "|")
		snap.Instances[catalog.Query{Service: name, Tag: tag}] = instances
	}
	return cfg.Services, snap, gc.Splits
}

func goldenInputs(t testing.TB) []string {
	inputs, err := filepath.Glob("testdata/golden/*.json")
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	return inputs
}

func TestBuiltinGolden(t *testing.T) {
	for _, input := range goldenInputs(t) {
		name := strings.TrimSuffix(filepath.Base(input), ".json")
		t.Run(name, func(t *testing.T) {
			services, snap, splits := loadGoldenCaseSplits(t, input)
			got, problems := NewBuiltinRenderer(fakeResolver).RenderSplits(services, snap, splits)
			for _, p := range problems {
				got = append(got, []byte("# problem: "+p.String()+"\n")...)
			}
			want := strings.TrimSuffix(input, ".json") + ".conf"
			if *update {
				if err := os.WriteFile(want, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			expected, err := os.ReadFile(want)
			if err != nil {
				t.Fatalf("%v (run go test ./render -run Golden -update)", err)
			}
			if string(expected) != string(got) {
				t.Errorf("output differs from %s (rerun with -update and review the diff):\n%s", want, got)
			}
		})
	}
}

// Every golden output is a config real nginx accepts.
func TestBuiltinGoldenPassesNginxT(t *testing.T) {
	n := testrig.NewNginx(t)
	for _, input := range goldenInputs(t) {
		services, snap, splits := loadGoldenCaseSplits(t, input)
		out, _ := NewBuiltinRenderer(fakeResolver).RenderSplits(services, snap, splits)
		n.WriteConf("lbctl.conf", string(out))
		if err := n.Test(); err != nil {
			t.Errorf("%s: %v\n%s", input, err, out)
		}
	}
}

// The caching renderer gives the same bytes as a fresh render, across changes.
func TestBuiltinRendererCacheMatchesFreshRender(t *testing.T) {
	services, snap := loadGoldenCase(t, "testdata/golden/several.json")
	r := NewBuiltinRenderer(fakeResolver)
	steps := []func(){
		func() {},
		func() { snap.Instances[QueryOf(services[1])] = nil },
		func() { services[2].Keepalive = 4 },
		func() {},
	}
	for i, step := range steps {
		step()
		cached, _ := r.Render(services, snap)
		fresh, _ := Builtin(services, snap, fakeResolver)
		if string(cached) != string(fresh) {
			t.Fatalf("step %d: cached render differs from a fresh one:\n%s\n---\n%s", i, cached, fresh)
		}
	}
}
