package render

import (
	"bytes"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/lbctl/lbctl/catalog"
	"github.com/lbctl/lbctl/config"
	"github.com/lbctl/lbctl/internal/testrig"
	"github.com/lbctl/lbctl/internal/trafficsplit"
)

// splitFuzzServices follow shifts: one pinned to blue, one untagged, one
// plain service that must ignore splits, and access logs.
var splitFuzzServices = func() []config.Service {
	cfg, err := config.Parse("fuzz", []byte(`services:
  - {name: greeter, tag: blue, listen: 5000, shift: true, access_log: /tmp/lbctl-fuzz.log}
  - {name: greeter, listen: 5001, shift: true}
  - {name: greeter, tag: green, listen: 5002}
`), config.Options{})
	if err != nil {
		panic(err)
	}
	return cfg.Services
}()

// decodeTagged is decodeInstances plus a sixth field: comma-separated tags.
func decodeTagged(s string) []catalog.Instance {
	out := decodeInstances(s)
	for i, line := range strings.Split(s, "\x1e") {
		if f := strings.Split(line, "\x1f"); len(f) > 5 {
			out[i].Tags = strings.Split(f[5], ",")
		}
	}
	return out
}

func FuzzBuiltinSplit(f *testing.F) {
	f.Add("b1\x1fn\x1f10.0.0.1\x1f7000\x1f\x1fblue\x1eg1\x1fn\x1f10.0.0.2\x1f7000\x1f\x1fgreen", "blue", "green", 10, "running")
	f.Add("b1\x1fn\x1f10.0.0.1\x1f7000\x1f3\x1fblue\x1eg1\x1fn\x1f10.0.0.2\x1f7000\x1f100\x1fgreen,blue", "blue", "green", 99, "done")
	f.Add("g1\x1fn\x1f::1\x1f7000\x1f\x1fgreen", "blue", "green", 50, "interrupted")
	f.Add("b1\x1fn\x1f10.0.0.1\x1f7000\x1f\x1fblue", "blue", "green;\n}", 50, "running")
	nginx := testrig.NewNginx(f)
	runs := 0
	f.Fuzz(func(t *testing.T, instances, from, to string, toPct int, state string) {
		in := decodeTagged(instances)
		split := trafficsplit.Split{Service: "greeter", From: from, To: to, State: trafficsplit.State(state)}.At(toPct)
		splits := map[string]trafficsplit.Split{"greeter": split}
		snap := catalog.Snapshot{Instances: map[catalog.Query][]catalog.Instance{
			{Service: "greeter"}:               in,
			{Service: "greeter", Tag: "green"}: in,
		}}
		out, _ := NewBuiltinRenderer(fakeResolver).RenderSplits(splitFuzzServices, snap, splits)
		checkOnlyTemplateLines(t, out)
		slices.Reverse(in)
		if again, _ := NewBuiltinRenderer(fakeResolver).RenderSplits(splitFuzzServices, snap, splits); !bytes.Equal(out, again) {
			t.Fatalf("output depends on input order:\n%s\n---\n%s", out, again)
		}
		if split.Validate() == nil {
			checkProportions(t, out, split)
		}
		if runs++; runs > 16 && !sampledForNginx(instances, from+to) {
			return
		}
		if err := nginx.TestWith("lbctl.conf", string(out)); err != nil {
			t.Fatalf("nginx -t rejected the output: %v\n%s", err, out)
		}
	})
}

var serverLine = regexp.MustCompile(`(?m)^    server \S+?(?: weight=(\d+))?;  #.* \[([^\]]+)\]$`)

// checkProportions: in the first block (the split one), the tags' total
// weights stand as the split says, unless a tag had no server (a note says so)
// or weights were capped.
func checkProportions(t *testing.T, out []byte, split trafficsplit.Split) {
	t.Helper()
	block, _, _ := strings.Cut(string(out), "\nserver {")
	if strings.Contains(block, "takes all calls") {
		return
	}
	sum := map[string]int{}
	for _, m := range serverLine.FindAllStringSubmatch(block, -1) {
		w := 1
		if m[1] != "" {
			w, _ = strconv.Atoi(m[1])
		}
		if w >= maxSplitWeight/10 {
			return // possibly scaled down: only approximately in proportion
		}
		sum[m[2]] += w
	}
	if sum[split.From] == 0 || sum[split.To] == 0 {
		return
	}
	if got, want := sum[split.From]*split.ToPercent(), sum[split.To]*split.FromPercent(); got != want {
		t.Fatalf("%s: weights %v are not %d:%d\n%s", split, sum, split.FromPercent(), split.ToPercent(), block)
	}
}

func TestApplySplitProportions(t *testing.T) {
	for _, c := range []struct {
		nFrom, nTo, toPct int
		want              string
	}{
		{2, 1, 10, "blue:9 blue:9 green:2"},
		{1, 1, 50, "blue:1 green:1"},
		{3, 2, 10, "blue:6 blue:6 blue:6 green:1 green:1"},
		{2, 2, 100, "green:1 green:1"},
		{2, 2, 0, "blue:1 blue:1"},
		{2, 0, 50, "blue:1 blue:1"},
		{0, 2, 50, "green:1 green:1"},
	} {
		var servers []upstreamServer
		for i := range c.nFrom {
			servers = append(servers, upstreamServer{Addr: fmt.Sprint("b", i), Weight: 1, Tag: "blue"})
		}
		for i := range c.nTo {
			servers = append(servers, upstreamServer{Addr: fmt.Sprint("g", i), Weight: 1, Tag: "green"})
		}
		got := applySplit(servers, &splitView{From: "blue", To: "green", FromPercent: 100 - c.toPct, ToPercent: c.toPct})
		var parts []string
		for _, s := range got {
			parts = append(parts, fmt.Sprintf("%s:%d", s.Tag, s.Weight))
		}
		if strings.Join(parts, " ") != c.want {
			t.Errorf("%d blue, %d green at %d%%: got %v, want %s", c.nFrom, c.nTo, c.toPct, parts, c.want)
		}
	}
}

func TestApplySplitCapsHugeWeights(t *testing.T) {
	var servers []upstreamServer
	for i := range 997 {
		servers = append(servers, upstreamServer{Addr: fmt.Sprint("b", i), Weight: 100, Tag: "blue"})
	}
	servers = append(servers, upstreamServer{Addr: "g", Weight: 1, Tag: "green"})
	got := applySplit(servers, &splitView{From: "blue", To: "green", FromPercent: 1, ToPercent: 99})
	for _, s := range got {
		if s.Weight < 1 || s.Weight > maxSplitWeight {
			t.Fatalf("weight %d out of 1-%d", s.Weight, maxSplitWeight)
		}
	}
}
