package render

import (
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"github.com/lbctl/lbctl/catalog"
	"github.com/lbctl/lbctl/internal/testrig"
	"github.com/lbctl/lbctl/live"
)

var testLive = Live{Socket: "/run/lbctl-test/live.sock", Seed: "/run/lbctl-test/live.json", Memory: "1m"}

// upstreamServerLine is one `server` of a reload-mode upstream: address and weight.
var upstreamServerLine = regexp.MustCompile(`(?m)^    server (\S+?)(?: weight=(\d+))?;`)

// reloadModeServers is what reload mode writes into each upstream, by
// upstream name, as "addr weight" strings in the order written.
func reloadModeServers(conf string) map[string][]string {
	out := map[string][]string{}
	for _, block := range strings.Split(conf, "\nupstream ")[1:] {
		name, body, _ := strings.Cut(block, " {")
		body, _, _ = strings.Cut(body, "}")
		for _, m := range upstreamServerLine.FindAllStringSubmatch(body, -1) {
			w := m[2]
			if w == "" {
				w = "1"
			}
			out[name] = append(out[name], m[1]+" "+w)
		}
	}
	return out
}

func livePeers(set live.Set) map[string][]string {
	out := map[string][]string{}
	for name, up := range set {
		if up.Version != live.VersionOf(up.Peers) {
			panic("version " + up.Version + " is not that of the peers of " + name)
		}
		for _, p := range up.Peers {
			out[name] = append(out[name], net.JoinHostPort(p.Host, strconv.Itoa(p.Port))+" "+strconv.Itoa(p.Weight))
		}
		if len(up.Peers) == 0 {
			out[name] = nil
		}
	}
	return out
}

// Live mode keeps every promise of the template: for every golden input
// (hostile data, IPv6, weights, splits, zero instances...) the peers pushed
// are exactly the servers reload mode writes, with the same weights.
func TestLivePeersAreTheServersReloadModeWrites(t *testing.T) {
	compared := 0
	defer func() {
		if compared < 20 {
			t.Errorf("only %d servers compared: the reload-mode parse is broken", compared)
		}
	}()
	for _, input := range goldenInputs(t) {
		services, snap, splits := loadGoldenCaseSplits(t, input)
		conf, _ := NewBuiltinRenderer(fakeResolver).RenderSplits(services, snap, splits)
		_, set, _ := NewLiveRenderer(fakeResolver, testLive).RenderLive(services, snap, splits)
		want, got := reloadModeServers(string(conf)), livePeers(set)
		for _, s := range services {
			name := s.UpstreamName()
			if _, ok := set[name]; !ok {
				t.Errorf("%s: no live upstream %s", input, name)
			}
			compared += len(want[name])
			if !slices.Equal(want[name], got[name]) {
				t.Errorf("%s: upstream %s: live peers %q, reload mode writes %q", input, name, got[name], want[name])
			}
		}
	}
}

// In live mode the files depend on the config only: instances, weights and
// splits come and go without a byte of the config changing (no reload).
func TestLiveConfigHoldsNoInstance(t *testing.T) {
	for _, input := range goldenInputs(t) {
		services, snap, splits := loadGoldenCaseSplits(t, input)
		r := NewLiveRenderer(fakeResolver, testLive)
		full, _, _ := r.RenderLive(services, snap, splits)
		empty, set, _ := r.RenderLive(services, catalog.Snapshot{}, nil)
		if string(full) != string(empty) {
			t.Errorf("%s: the live config changed with the instances:\n%s\n---\n%s", input, full, empty)
		} else if unsafe.SliceData(full) != unsafe.SliceData(empty) {
			t.Errorf("%s: the same live config was built again (at 1,000 services, ~500 KB per instance change)", input)
		}
		for name, up := range set {
			if len(up.Peers) != 0 {
				t.Errorf("%s: %s has peers %v with no instance", input, name, up.Peers)
			}
		}
		if strings.Contains(string(full), "    server 1") {
			t.Errorf("%s: an instance in the live config:\n%s", input, full)
		}
	}
}

// Every live render is a config real nginx with the Lua module accepts.
func TestLiveConfigPassesNginxT(t *testing.T) {
	n := testrig.NewNginxWith(t, testrig.NginxOptions{Lua: true})
	target := testLive
	target.Socket, target.Seed = n.Dir+"/live.sock", n.Dir+"/live.json"
	for _, input := range goldenInputs(t) {
		services, snap, splits := loadGoldenCaseSplits(t, input)
		out, _, _ := NewLiveRenderer(fakeResolver, target).RenderLive(services, snap, splits)
		n.WriteConf("lbctl.conf", string(out))
		if err := n.Test(); err != nil {
			t.Errorf("%s: %v\n%s", input, err, out)
		}
	}
}
