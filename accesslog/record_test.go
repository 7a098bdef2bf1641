package accesslog

import (
	"slices"
	"testing"

	"github.com/lbctl/lbctl/catalog"
	"github.com/lbctl/lbctl/templates"
	"strings"
)

func TestAttemptsLabelEveryUpstreamTried(t *testing.T) {
	cases := []struct {
		line string
		want []Attempt
	}{
		{`{"upstream":"127.0.0.1:7000","status":"200","grpc_status":"0","grpc_status_hdr":""}`,
			[]Attempt{{"127.0.0.1:7000", "0"}}},
		{`{"upstream":"127.0.0.1:7000","status":"200","grpc_status":"","grpc_status_hdr":"13"}`,
			[]Attempt{{"127.0.0.1:7000", "13"}}},
		{`{"upstream":"127.0.0.1:1, [::1]:7001","status":"200","grpc_status":"0","grpc_status_hdr":""}`,
			[]Attempt{{"127.0.0.1:1", UpstreamError}, {"[::1]:7001", "0"}}},
		{`{"upstream":"127.0.0.1:1","status":"502","grpc_status":"","grpc_status_hdr":""}`,
			[]Attempt{{"127.0.0.1:1", "http_502"}}},
		{`{"upstream":"","status":"200","grpc_status":"","grpc_status_hdr":""}`, nil},
		{`{"upstream":"unix:/x.sock","status":"200","grpc_status":"0"}`, nil},
	}
	for _, c := range cases {
		r, err := ParseLine([]byte(c.line))
		if err != nil {
			t.Fatal(err)
		}
		if got := r.Attempts(); !slices.Equal(got, c.want) {
			t.Errorf("%s: got %v, want %v", c.line, got, c.want)
		}
	}
}

func TestIsError(t *testing.T) {
	for _, l := range []string{"2", "4", "13", "14", "15", UpstreamError, "http_502", "http_504"} {
		if !IsError(l) {
			t.Errorf("%s is not an error", l)
		}
	}
	for _, l := range []string{"0", "1", "3", "5", "7", "16", "http_499", "http_200"} {
		if IsError(l) {
			t.Errorf("%s is an error", l)
		}
	}
}

func TestCounterCountsByTagAndVersion(t *testing.T) {
	c := NewCounter()
	c.SetInstances(catalog.Snapshot{Instances: map[catalog.Query][]catalog.Instance{
		{Service: "greeter"}: {
			{ID: "b1", Address: "127.0.0.1", Port: 7000, Tags: []string{"blue"}, Meta: map[string]string{"version": "v1"}},
			{ID: "g1", Address: "127.0.0.1", Port: 7001, Tags: []string{"green", "bad tag;"}, Meta: map[string]string{"version": "v2"}},
		},
	}})
	for _, l := range []string{
		`{"upstream":"127.0.0.1:7000","status":"200","grpc_status":"0"}`,
		`{"upstream":"127.0.0.1:7001","status":"200","grpc_status_hdr":"14"}`,
		`{"upstream":"127.0.0.1:7001","status":"200","grpc_status":"0"}`,
		`{"upstream":"127.0.0.1:9999","status":"200","grpc_status":"0"}`,
	} {
		r, _ := ParseLine([]byte(l))
		c.Add(r)
	}
	stats := c.TakeChanged()
	if len(stats) != 1 {
		t.Fatalf("got %d services", len(stats))
	}
	g := stats[0].Tags["green"]
	if g.Total() != 2 || g.Errors() != 1 || stats[0].Versions["v2"].Total() != 2 || stats[0].Tags["blue"].Total() != 1 {
		t.Fatalf("stats %+v", stats[0])
	}
	if _, ok := stats[0].Tags["bad tag;"]; ok || c.Unknown() != 1 {
		t.Fatalf("unsafe tag kept or unknown miscounted: %+v, unknown %d", stats[0].Tags, c.Unknown())
	}
	if len(c.TakeChanged()) != 0 {
		t.Fatal("changed again without new lines")
	}
}

func TestCountsMinusSurvivesARestartedCounter(t *testing.T) {
	now := Counts{"0": 10, "14": 1}
	base := Counts{"0": 4, "14": 3}
	d := now.Minus(base)
	if d["0"] != 6 || d["14"] != 1 {
		t.Fatalf("%v", d)
	}
}

// The template and the parser agree on the format.
func TestTemplateDefinesLogFormat(t *testing.T) {
	if !strings.Contains(templates.GRPC, "log_format "+FormatName+" escape=json '"+LogFormat+"';") {
		t.Fatalf("templates/grpc.conf.tmpl does not define log_format %s as accesslog.LogFormat", FormatName)
	}
}
