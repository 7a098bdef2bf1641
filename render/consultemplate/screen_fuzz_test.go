package consultemplate

import (
	"fmt"
	"hash/fnv"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	dep "github.com/hashicorp/consul-template/dependency"
	cttemplate "github.com/hashicorp/consul-template/template"

	"github.com/lbctl/lbctl/config"
	"github.com/lbctl/lbctl/internal/testrig"
)

// fuzzTemplates are seed 001's template (server {{.Address}}:{{.Port}};) and
// one that prints tags and meta, in comments, quoted strings and bare
// parameters.
var fuzzTemplates = []string{seedTemplate, "testdata/tags_meta.tpl"}

// decodeHealth turns a fuzz input into instances: one per "\x1e"-separated
// record of "\x1f"-separated fields: id, node, address, port, tags
// ("\x1d"-separated), meta ("\x1d"-separated key=value).
func decodeHealth(s string) []*dep.HealthService {
	var out []*dep.HealthService
	for _, rec := range strings.Split(s, "\x1e") {
		f := strings.Split(rec, "\x1f")
		for len(f) < 6 {
			f = append(f, "")
		}
		port, _ := strconv.Atoi(f[3])
		in := &dep.HealthService{ID: f[0], Name: "echo", Node: f[1], NodeAddress: "10.0.0.254", Address: f[2], Port: port,
			Status: "passing", Tags: dep.ServiceTags{}}
		if f[4] != "" {
			in.Tags = strings.Split(f[4], "\x1d")
		}
		if f[5] != "" {
			in.ServiceMeta = map[string]string{}
			for _, kv := range strings.Split(f[5], "\x1d") {
				k, v, _ := strings.Cut(kv, "=")
				in.ServiceMeta[k] = v
			}
		}
		out = append(out, in)
	}
	return out
}

func encodeHealth(in ...*dep.HealthService) string {
	var recs []string
	for _, i := range in {
		var meta []string
		for _, k := range slices.Sorted(maps.Keys(i.ServiceMeta)) {
			meta = append(meta, k+"="+i.ServiceMeta[k])
		}
		recs = append(recs, strings.Join([]string{i.ID, i.Node, i.Address, strconv.Itoa(i.Port),
			strings.Join(i.Tags, "\x1d"), strings.Join(meta, "\x1d")}, "\x1f"))
	}
	return strings.Join(recs, "\x1e")
}

// benignLike is a stand-in for kept with values no one could object to, and
// the same shape: as many instances, tags and meta keys, the same meta keys
// and the same empty values, so a template's branches go the same way.
func benignLike(kept []*dep.HealthService) []*dep.HealthService {
	out := make([]*dep.HealthService, len(kept))
	for i, k := range kept {
		b := &dep.HealthService{ID: "b" + strconv.Itoa(i), Name: k.Name, Node: "n", NodeAddress: "10.0.0.254",
			Address: fmt.Sprintf("10.1.%d.%d", i/256%256, i%256), Port: 80, Status: "passing", Tags: dep.ServiceTags{}}
		for _, t := range k.Tags {
			b.Tags = append(b.Tags, nonEmptyAs(t, "t"))
		}
		if k.ServiceMeta != nil {
			b.ServiceMeta = map[string]string{}
			for key, v := range k.ServiceMeta {
				b.ServiceMeta[key] = nonEmptyAs(v, "v")
			}
		}
		out[i] = b
	}
	return out
}

func nonEmptyAs(s, as string) string {
	if s == "" {
		return ""
	}
	return as
}

// renderWith executes ct with every health query it makes answered by
// instances (screened, as a session does), and returns the output and what
// the template saw.
func renderWith(t *testing.T, ct *cttemplate.Template, instances []*dep.HealthService, screened bool) (string, []*dep.HealthService) {
	t.Helper()
	brain := cttemplate.NewBrain()
	var seen []*dep.HealthService
	for range 3 {
		res, err := ct.Execute(&cttemplate.ExecuteInput{Brain: brain})
		if err != nil {
			t.Fatalf("execute: %v", err)
		}
		if res.Missing.Len() == 0 {
			return string(res.Output), seen
		}
		for _, d := range res.Missing.List() {
			if reflect.TypeOf(d) != reflect.TypeFor[*dep.HealthServiceQuery]() {
				t.Fatalf("the fuzz templates make only health queries, got %s", d)
			}
			var data any = instances
			if screened {
				data, _ = screen(d, instances)
			}
			seen = data.([]*dep.HealthService)
			brain.Remember(d, data)
		}
	}
	t.Fatal("still missing data")
	return "", nil
}

// directives is conf's structure, read as nginx's parser reads it: each
// directive as its depth, name and parameter count, and "}" where a block
// closes. Comments and the parameters' text are not part of it.
func directives(conf string) []string {
	var out, words []string
	var word strings.Builder
	inWord, depth := false, 0
	end := func() {
		if inWord {
			words = append(words, word.String())
			word.Reset()
			inWord = false
		}
	}
	emit := func(suffix string) {
		end()
		if len(words) > 0 {
			out = append(out, fmt.Sprintf("%d %s/%d%s", depth, words[0], len(words)-1, suffix))
		}
		words = words[:0]
	}
	for i := 0; i < len(conf); i++ {
		switch c := conf[i]; {
		case c == '#' && !inWord:
			for i < len(conf) && conf[i] != '\n' {
				i++
			}
		case c == '"' || c == '\'':
			inWord = true
			for i++; i < len(conf) && conf[i] != c; i++ {
				if conf[i] == '\\' {
					i++
				}
				if i < len(conf) {
					word.WriteByte(conf[i])
				}
			}
		case c == '\\':
			inWord = true
			if i++; i < len(conf) {
				word.WriteByte(conf[i])
			}
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
			end()
		case c == ';':
			emit("")
		case c == '{':
			emit(" {")
			depth++
		case c == '}':
			emit("")
			out = append(out, "}")
			depth--
		default:
			inWord = true
			word.WriteByte(c)
		}
	}
	end()
	if len(words) > 0 {
		out = append(out, "unterminated "+strings.Join(words, " "))
	}
	return out
}

// allIPv4 reports whether nginx can load these instances' addresses as
// seed 001's template prints them: IPv6 needs brackets it does not write,
// and nginx resolves host names at load (fuzzed names do not resolve).
func allIPv4(in []*dep.HealthService) bool {
	for _, i := range in {
		if ip, err := netip.ParseAddr(i.Address); err != nil || !ip.Is4() {
			return false
		}
	}
	return true
}

func FuzzScreenedTemplates(f *testing.F) {
	good := &dep.HealthService{ID: "echo-1", Node: "node-1", Address: "10.0.0.1", Port: 7001,
		Tags: []string{"grpc", "blue"}, ServiceMeta: map[string]string{"version": "v2", "weight": "3"}}
	f.Add(encodeHealth(good))
	f.Add(encodeHealth(good, &dep.HealthService{ID: "attack", Node: "node-2", Address: issue16Address, Port: 1}))
	f.Add(encodeHealth(&dep.HealthService{ID: "tags", Address: "10.0.0.2", Port: 7002, Tags: []string{`a"; } server {`, "b"}}))
	f.Add(encodeHealth(&dep.HealthService{ID: "meta", Address: "10.0.0.3", Port: 7003,
		ServiceMeta: map[string]string{"version": "1; autoindex on", "x\" always; root /;": "y", "e": ""}}))
	f.Add(encodeHealth(&dep.HealthService{ID: "a\nb", Node: "n#1", Address: "web.internal", Port: 70000}))

	var cts []*cttemplate.Template
	for _, src := range fuzzTemplates {
		loaded, err := loadTemplates([]config.Template{{Source: src, Destination: "/dev/null"}})
		if err != nil {
			f.Fatal(err)
		}
		cts = append(cts, loaded[0].ct)
	}
	nginx := testrig.NewNginx(f)
	runs := 0
	f.Fuzz(func(t *testing.T, input string) {
		instances := decodeHealth(input)
		outs := make([]string, len(cts))
		for i, ct := range cts {
			out, seen := renderWith(t, ct, instances, true)
			want, _ := renderWith(t, ct, benignLike(seen), true)
			if got, wantDirs := directives(out), directives(want); !slices.Equal(got, wantDirs) {
				t.Fatalf("%s: the input changed the directives:\n%s\nwant the structure of\n%s\ngot  %q\nwant %q",
					fuzzTemplates[i], out, want, got, wantDirs)
			}
			outs[i] = out
		}

		runs++
		h := fnv.New32a()
		h.Write([]byte(input))
		_, seen := renderWith(t, cts[0], instances, true)
		// nginx refuses a parameter over 4096 bytes; one value that long is
		// caught by nginx -t before a swap, and adds nothing.
		if (runs > 16 && h.Sum32()%64 != 0) || !allIPv4(seen) || len(input) > 2048 {
			return
		}
		if err := os.WriteFile(filepath.Join(nginx.ConfD, "seed.conf"), []byte(outs[0]), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := nginx.TestWith("tags_meta.conf", outs[1]); err != nil {
			t.Fatalf("nginx -t rejected the output: %v\n%s\n%s", err, outs[0], outs[1])
		}
	})
}

// The structure reader must see what an injection adds, or the fuzz test
// proves nothing.
func TestDirectivesSeeInjections(t *testing.T) {
	q, _ := dep.NewHealthServiceQuery("hello_server|passing")
	loaded, err := loadTemplates([]config.Template{{Source: seedTemplate, Destination: "/dev/null"}})
	if err != nil {
		t.Fatal(err)
	}
	attack := []*dep.HealthService{{ID: "a", Address: issue16Address, Port: 1}}
	brain := cttemplate.NewBrain()
	brain.Remember(q, attack)
	res, err := loaded[0].ct.Execute(&cttemplate.ExecuteInput{Brain: brain})
	if err != nil {
		t.Fatal(err)
	}
	raw := directives(string(res.Output))
	benign, _ := renderWith(t, loaded[0].ct, benignLike(attack), false)
	if slices.Equal(raw, directives(benign)) || !slices.Contains(raw, "2 autoindex/1") {
		t.Fatalf("the raw attack's structure %q must differ from the benign one's %q", raw, directives(benign))
	}
	if got := directives("a 'b;c' \"d}\" e\\;f; # g;\nh {\n}\n"); !slices.Equal(got, []string{"0 a/3", "0 h/0 {", "}"}) {
		t.Fatalf("got %q", got)
	}
}
