package render

import (
	"bytes"
	"encoding/json"
	"hash/fnv"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/lbctl/lbctl/catalog"
	"github.com/lbctl/lbctl/config"
	"github.com/lbctl/lbctl/internal/testrig"
)

// fuzzServices is the config every fuzz input is rendered with: one plain
// service and one tag-filtered one, so both upstream shapes are exercised.
var fuzzServices = func() []config.Service {
	cfg, err := config.Parse("fuzz", []byte("services:\n  - name: greeter\n    listen: 5000\n  - name: greeter\n    tag: blue\n    listen: 5001\n"), config.Options{})
	if err != nil {
		panic(err)
	}
	return cfg.Services
}()

// encodeInstances turns instances into the fuzz input format: one instance
// per line, fields separated by "\x1f": id, node, address, port, weight.
func encodeInstances(in []catalog.Instance) string {
	var lines []string
	for _, i := range in {
		lines = append(lines, strings.Join([]string{i.ID, i.Node, i.Address, strconv.Itoa(i.Port), i.Meta["weight"]}, "\x1f"))
	}
	return strings.Join(lines, "\x1e")
}

func decodeInstances(s string) []catalog.Instance {
	var out []catalog.Instance
	for _, line := range strings.Split(s, "\x1e") {
		f := strings.Split(line, "\x1f")
		for len(f) < 5 {
			f = append(f, "")
		}
		port, _ := strconv.Atoi(f[3])
		in := catalog.Instance{ID: f[0], Node: f[1], Address: f[2], Port: port}
		if f[4] != "" {
			in.Meta = map[string]string{"weight": f[4]}
		}
		out = append(out, in)
	}
	return out
}

// allowedLine lists every line shape the built-in template writes. A line that
// matches none of them was added by input: the property the fuzzer guards.
var allowedLine = []*regexp.Regexp{
	regexp.MustCompile(`^$`),
	regexp.MustCompile(`^# Written by lbctl from Consul health data\. Do not edit: lbctl rewrites it\.$`),
	regexp.MustCompile(`^log_format lbctl_grpc escape=json '\{"time":"\$time_iso8601","upstream":"\$upstream_addr","status":"\$status","grpc_status":"\$upstream_trailer_grpc_status","grpc_status_hdr":"\$upstream_http_grpc_status"\}';$`),
	regexp.MustCompile(`^# shift from [A-Za-z0-9._-]+ to [A-Za-z0-9._-]+ \((running|done|rolled_back|aborted|interrupted)\): [A-Za-z0-9._-]+ \d{1,3}%, [A-Za-z0-9._-]+ \d{1,3}%(; [A-Za-z0-9._-]+ has no passing instance, so [A-Za-z0-9._-]+ takes all calls)?$`),
	regexp.MustCompile(`^    access_log /[A-Za-z0-9._/-]+ lbctl_grpc;$`),
	regexp.MustCompile(`^# greeter( \(tag (blue|green)\))?: \d+ passing instances?$`),
	regexp.MustCompile(`^upstream grpc_greeter(_blue|_green)? \{$`),
	regexp.MustCompile(`^    server (\d{1,3}(\.\d{1,3}){3}|\[[0-9a-f:.]+\]):\d{1,5}( weight=\d{1,5})?;(  # [A-Za-z0-9._:@-]{1,128}( \[[A-Za-z0-9._-]{1,128}\])?|  # \[[A-Za-z0-9._-]{1,128}\])?$`),
	regexp.MustCompile(`^    keepalive(_timeout)? \w+;$`),
	regexp.MustCompile(`^\}$`),
	regexp.MustCompile(`^server \{$`),
	regexp.MustCompile(`^    listen 500[0-2] http2;$`),
	regexp.MustCompile(`^    location / \{$`),
	regexp.MustCompile(`^        grpc_pass grpc://grpc_greeter(_blue|_green)?;$`),
	regexp.MustCompile(`^        grpc_(connect|read|send)_timeout \w+;$`),
	regexp.MustCompile(`^        grpc_socket_keepalive on;$`),
	regexp.MustCompile(`^        # No passing instance of greeter: answer every call UNAVAILABLE at once\.$`),
	regexp.MustCompile(`^        default_type application/grpc;$`),
	regexp.MustCompile(`^        add_header grpc-status 14 always;$`),
	regexp.MustCompile(`^        add_header grpc-message "no healthy instances of greeter" always;$`),
	regexp.MustCompile(`^        return 200 "";$`),
	regexp.MustCompile(`^    \}$`),
}

func checkOnlyTemplateLines(t *testing.T, out []byte) {
	t.Helper()
	for i, line := range strings.Split(string(out), "\n") {
		if !slices.ContainsFunc(allowedLine, func(re *regexp.Regexp) bool { return re.MatchString(line) }) {
			t.Fatalf("line %d was not written by the template: %q\n%s", i+1, line, out)
		}
	}
}

// sampledForNginx picks about one input in 64 for a real nginx -t, plus every
// seed (fuzzing would otherwise spend its time in nginx).
func sampledForNginx(plain, blue string) bool {
	h := fnv.New32a()
	h.Write([]byte(plain + "\x00" + blue))
	return h.Sum32()%64 == 0
}

func FuzzBuiltin(f *testing.F) {
	for _, input := range goldenInputs(f) {
		_, snap := loadGoldenCase(f, input)
		for _, instances := range snap.Instances {
			f.Add(encodeInstances(instances), "")
			f.Add("", encodeInstances(instances))
		}
	}
	nginx := testrig.NewNginx(f)
	seeds := 0
	f.Fuzz(func(t *testing.T, plain, blue string) {
		snap := catalog.Snapshot{Instances: map[catalog.Query][]catalog.Instance{
			{Service: "greeter"}:              decodeInstances(plain),
			{Service: "greeter", Tag: "blue"}: decodeInstances(blue),
		}}
		out, _ := Builtin(fuzzServices, snap, fakeResolver)
		checkOnlyTemplateLines(t, out)

		for q, in := range snap.Instances {
			slices.Reverse(in)
			snap.Instances[q] = in
		}
		if again, _ := Builtin(fuzzServices, snap, fakeResolver); !bytes.Equal(out, again) {
			t.Fatalf("output depends on input order:\n%s\n---\n%s", out, again)
		}

		seeds++
		if seeds > 32 && !sampledForNginx(plain, blue) {
			return
		}
		if err := nginx.TestWith("lbctl.conf", string(out)); err != nil {
			t.Fatalf("nginx -t rejected the output: %v\n%s", err, out)
		}
	})
}

// The fuzz seeds come from the golden inputs: keep that link visible.
func TestFuzzSeedsDecodeGoldenInputs(t *testing.T) {
	_, snap := loadGoldenCase(t, "testdata/golden/hostile.json")
	in := snap.Instances[catalog.Query{Service: "greeter"}]
	got := decodeInstances(encodeInstances(in))
	if len(got) != len(in) || got[1].Address != in[1].Address {
		a, _ := json.Marshal(got)
		t.Fatalf("round trip lost data: %s", a)
	}
}
