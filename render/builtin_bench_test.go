package render

import (
	"fmt"
	"testing"

	"github.com/lbctl/lbctl/catalog"
	"github.com/lbctl/lbctl/config"
)

// benchInput is n services with 10 passing instances each.
func benchInput(n int) ([]config.Service, catalog.Snapshot) {
	services := make([]config.Service, n)
	snap := catalog.Snapshot{Instances: map[catalog.Query][]catalog.Instance{}}
	for i := range services {
		s := config.Service{Name: fmt.Sprintf("svc-%04d", i), Listen: fmt.Sprint(10000 + i)}
		s.SetDefaultsForTest()
		services[i] = s
		instances := make([]catalog.Instance, 10)
		for j := range instances {
			instances[j] = catalog.Instance{
				ID: fmt.Sprintf("svc-%04d-%d", i, j), Node: fmt.Sprintf("node-%d", j),
				Address: fmt.Sprintf("10.%d.%d.%d", i/250, i%250, j+1), Port: 7000 + j,
				Meta: map[string]string{"version": "1.0", "weight": fmt.Sprint(j%5 + 1)},
			}
		}
		snap.Instances[QueryOf(s)] = instances
	}
	return services, snap
}

// BenchmarkBuiltin measures one full render: check, sort and template every
// instance of every service.
func BenchmarkBuiltin(b *testing.B) {
	for _, n := range []int{1, 100, 2000} {
		services, snap := benchInput(n)
		b.Run(fmt.Sprintf("services=%d/instances=10", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				out, problems := Builtin(services, snap, nil)
				if len(problems) != 0 || len(out) == 0 {
					b.Fatalf("bad bench input: %v", problems)
				}
			}
		})
	}
}

// BenchmarkBuiltinOneChanged measures the render after one Consul change: one
// service's instances differ, every other block comes from the cache.
func BenchmarkBuiltinOneChanged(b *testing.B) {
	for _, n := range []int{1, 100, 2000} {
		services, snap := benchInput(n)
		changed := snap.Instances[QueryOf(services[0])]
		alt := append([]catalog.Instance(nil), changed[1:]...)
		r := NewBuiltinRenderer(nil)
		r.Render(services, snap)
		b.Run(fmt.Sprintf("services=%d/instances=10", n), func(b *testing.B) {
			b.ReportAllocs()
			flip := false
			for b.Loop() {
				flip = !flip
				if flip {
					snap.Instances[QueryOf(services[0])] = alt
				} else {
					snap.Instances[QueryOf(services[0])] = changed
				}
				if out, _ := r.Render(services, snap); len(out) == 0 {
					b.Fatal("empty render")
				}
			}
		})
	}
}
