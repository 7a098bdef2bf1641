package consultemplate

import (
	"fmt"
	"testing"

	dep "github.com/hashicorp/consul-template/dependency"
	cttemplate "github.com/hashicorp/consul-template/template"

	"github.com/lbctl/lbctl/config"
)

// BenchmarkRenderSeedTemplate measures one render of the seed template with
// n instances already in the brain: the CPU cost of a Consul change, without
// the network. Run: go test -run '^$' -bench . ./render/consultemplate/
func BenchmarkRenderSeedTemplate(b *testing.B) {
	for _, n := range []int{1, 100, 1000, 10000} {
		b.Run(fmt.Sprintf("instances=%d", n), func(b *testing.B) {
			templates, err := loadTemplates([]config.Template{{Source: seedTemplate, Destination: "/dev/null"}})
			if err != nil {
				b.Fatal(err)
			}
			q, err := dep.NewHealthServiceQuery("hello_server|passing")
			if err != nil {
				b.Fatal(err)
			}
			instances := make([]*dep.HealthService, n)
			for i := range instances {
				instances[i] = &dep.HealthService{Node: "n1", ID: fmt.Sprintf("hello-%05d", i), Name: "hello_server",
					Address: fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255), Port: 9000, Status: "passing"}
			}
			brain := cttemplate.NewBrain()
			brain.Remember(q, instances)
			b.ReportAllocs()
			for b.Loop() {
				res, err := templates[0].ct.Execute(&cttemplate.ExecuteInput{Brain: brain})
				if err != nil || res.Missing.Len() != 0 {
					b.Fatalf("render: %v, missing %d", err, res.Missing.Len())
				}
			}
		})
	}
}
