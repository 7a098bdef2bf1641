package consultemplate

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	dep "github.com/hashicorp/consul-template/dependency"
	cttemplate "github.com/hashicorp/consul-template/template"

	"github.com/lbctl/lbctl/config"
)

// dataTypes is what each screened dependency gives a template, as the
// watcher hands it to the brain.
var dataTypes = map[reflect.Type]reflect.Type{
	reflect.TypeFor[*dep.HealthServiceQuery]():      reflect.TypeFor[[]*dep.HealthService](),
	reflect.TypeFor[*dep.CatalogServicesQuery]():    reflect.TypeFor[[]*dep.CatalogSnippet](),
	reflect.TypeFor[*dep.CatalogNodesQuery]():       reflect.TypeFor[[]*dep.Node](),
	reflect.TypeFor[*dep.CatalogNodeQuery]():        reflect.TypeFor[*dep.CatalogNode](),
	reflect.TypeFor[*dep.KVGetQuery]():              reflect.TypeFor[string](),
	reflect.TypeFor[*dep.KVListQuery]():             reflect.TypeFor[[]*dep.KeyPair](),
	reflect.TypeFor[*dep.CatalogDatacentersQuery](): reflect.TypeFor[[]string](),
}

// screenedFuncs are the template functions README.md says are screened.
var screenedFuncs = []string{
	`service "web"`, `service "web|passing"`, `connect "web"`, `services`, `nodes`, `node "n1"`,
	`key "k"`, `keyOrDefault "k" "d"`, `keyExists "k"`, `ls "p"`, `safeLs "p"`, `tree "p"`, `safeTree "p"`, `datacenters`,
}

const (
	benign  = "ok-1" // a plain value, an IP-less host name: passes every rule
	hostile = "x;}"
)

// fill sets every settable string (map keys and values, slice elements,
// struct fields, through pointers) to benign, but the one numbered target
// (counted in visiting order) to hostile; ints become 80. It returns how
// many strings it visited.
func fill(v reflect.Value, target int) int {
	n := 0
	var walk func(v reflect.Value)
	str := func() string {
		n++
		if n-1 == target {
			return hostile
		}
		return benign
	}
	walk = func(v reflect.Value) {
		switch v.Kind() {
		case reflect.String:
			v.SetString(str())
		case reflect.Int, reflect.Int64:
			v.SetInt(80)
		case reflect.Uint64:
			v.SetUint(80)
		case reflect.Bool:
			v.SetBool(true)
		case reflect.Pointer:
			if v.Type().Elem().Kind() == reflect.Struct && v.Type().Elem().PkgPath() == "time" {
				return
			}
			v.Set(reflect.New(v.Type().Elem()))
			walk(v.Elem())
		case reflect.Slice:
			v.Set(reflect.MakeSlice(v.Type(), 1, 1))
			walk(v.Index(0))
		case reflect.Map:
			m := reflect.MakeMap(v.Type())
			key := reflect.New(v.Type().Key()).Elem()
			walk(key)
			val := reflect.New(v.Type().Elem()).Elem()
			walk(val)
			m.SetMapIndex(key, val)
			v.Set(m)
		case reflect.Struct:
			for i := range v.NumField() {
				if v.Type().Field(i).IsExported() {
					walk(v.Field(i))
				}
			}
		}
	}
	walk(v)
	return n
}

// executeFilled renders src (a template over one screened function) with
// every dependency it asks for filled by fill(target), screened unless raw.
// It returns the output and how many strings the data held.
func executeFilled(t *testing.T, src string, target int, raw bool) (string, int) {
	t.Helper()
	ct, err := cttemplate.NewTemplate(&cttemplate.NewTemplateInput{Contents: src, ErrFatal: true})
	if err != nil {
		t.Fatal(err)
	}
	brain := cttemplate.NewBrain()
	leaves := 0
	for range 5 { // a template can ask for more once it has data
		res, err := ct.Execute(&cttemplate.ExecuteInput{Brain: brain})
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		if res.Missing.Len() == 0 {
			return string(res.Output), leaves
		}
		for _, d := range res.Missing.List() {
			typ, ok := dataTypes[reflect.TypeOf(d)]
			if !ok {
				t.Fatalf("%s asks for %s (%T): not in dataTypes", src, d, d)
			}
			data := reflect.New(typ).Elem()
			leaves += fill(data, target-leaves)
			value := data.Interface()
			if !raw {
				value, _ = screen(d, value)
			}
			brain.Remember(d, value)
		}
	}
	t.Fatalf("%s: still missing data after 5 rounds", src)
	return "", 0
}

// Every string a screened function can return, in every field of its data
// (found by reflection, so a field a new consul-template version adds is
// covered or fails here), is either screened or emptied: set to a hostile
// value one at a time, it never reaches the output.
func TestScreenedFunctionsNeverPrintSyntax(t *testing.T) {
	for _, fn := range screenedFuncs {
		t.Run(fn, func(t *testing.T) {
			src := "{{ " + fn + " | toJSON }}"
			out, leaves := executeFilled(t, src, -1, false)
			if leaves == 0 {
				t.Fatalf("no data filled")
			}
			if fn != `keyExists "k"` { // prints a bool
				if !strings.Contains(out, benign) {
					t.Fatalf("benign data was screened out: %s", out)
				}
				if raw, _ := executeFilled(t, src, 0, true); !strings.Contains(raw, hostile) {
					t.Fatalf("the test's hostile value does not reach a raw template: %s", raw)
				}
			}
			for target := range leaves {
				if out, _ := executeFilled(t, src, target, false); strings.Contains(out, hostile) {
					t.Errorf("string %d of %d reaches the template: %s", target, leaves, out)
				}
			}
		})
	}
}

func TestScreenReasons(t *testing.T) {
	q, _ := dep.NewHealthServiceQuery("echo")
	in := []*dep.HealthService{
		{ID: "good", Address: "10.0.0.1", NodeAddress: "10.0.0.9", Port: 80},
		{ID: "attack", Address: "10.9.9.9:1; } server { listen 127.0.0.1:9999; location / { root /; autoindex on; } } upstream x { server 10.9.9.9", NodeAddress: "10.0.0.9", Port: 80},
		{ID: "port", Address: "10.0.0.2", NodeAddress: "10.0.0.9", Port: 0},
		{ID: "tag", Address: "web.internal", NodeAddress: "10.0.0.9", Port: 80, Tags: []string{"blue", "a b"}},
		{ID: "meta", Address: "10.0.0.3", NodeAddress: "10.0.0.9", Port: 80, ServiceMeta: map[string]string{"version": "1\n"}},
		{ID: "node", Address: "10.0.0.4", NodeAddress: "10.0.0.9", Port: 80, Node: "n#1"},
	}
	kept, out := screen(q, in)
	if got := kept.([]*dep.HealthService); len(got) != 1 || got[0].ID != "good" {
		t.Fatalf("kept %v, want only good", got)
	}
	want := []string{
		`service_id attack: address "10.9.9.9:1; } server {`,
		`service_id port: port 0 is not 1-65535; left out`,
		`service_id tag: tag "a b" carries nginx syntax (' '); left out`,
		`service_id meta: service meta version "1\n" carries nginx syntax ('\n'); left out`,
		`service_id node: node "n#1" carries nginx syntax ('#'); left out`,
	}
	if len(out) != len(want) {
		t.Fatalf("left out %v, want %d", out, len(want))
	}
	for i, l := range out {
		if got := fmt.Sprintf("%s %s: %s", l.kind, l.id, l.why); !strings.HasPrefix(got, want[i]) {
			t.Errorf("got %q, want it to start %q", got, want[i])
		}
	}
	if in[1].ID != "attack" || len(in) != 6 {
		t.Error("screen changed its input")
	}
}

func TestScreenKVValueReadsAsEmpty(t *testing.T) {
	q, _ := dep.NewKVGetQuery("lb/extra")
	if v, out := screen(q, "max_fails=3;\n}"); v != "" || len(out) != 1 || out[0].id != "kv.get(lb/extra)" {
		t.Fatalf("got %q, %v", v, out)
	}
	if v, out := screen(q, "max_fails=3"); v != "max_fails=3" || out != nil {
		t.Fatalf("a plain value: got %q, %v", v, out)
	}
	if v, _ := screen(q, nil); v != nil {
		t.Fatalf("a missing key must stay missing, got %v", v)
	}
	f, _ := dep.NewFileQuery("/etc/hosts")
	if v, _ := screen(f, "a;b"); v != "a;b" {
		t.Fatalf("file is local, not Consul data: got %v", v)
	}
}

func TestServicesLeaveOutOnlyTheBadTag(t *testing.T) {
	q, _ := dep.NewCatalogServicesQuery("")
	kept, out := screen(q, []*dep.CatalogSnippet{{Name: "web", Tags: []string{"grpc", "x;y"}}, {Name: "bad name", Tags: []string{"grpc"}}})
	got := kept.([]*dep.CatalogSnippet)
	if len(got) != 1 || got[0].Name != "web" || len(got[0].Tags) != 1 || got[0].Tags[0] != "grpc" || len(out) != 2 {
		t.Fatalf("got %+v, left out %v", got, out)
	}
}

func TestRawConsulDataSelectsTheBrain(t *testing.T) {
	e := &Engine{clients: dep.NewClientSet(), templates: []*loadedTemplate{
		{cfg: config.Template{Source: "a"}}, {cfg: config.Template{Source: "b", RawConsulData: true}},
	}}
	s := e.newSession(true)
	defer s.stop()
	if s.brain(e.templates[0]) != s.screened || s.brain(e.templates[1]) != s.raw || s.screened == nil || s.raw == nil || s.screened == s.raw {
		t.Fatal("each template must read its own brain")
	}
}
