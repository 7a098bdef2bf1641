package consultemplate

import (
	"errors"
	"fmt"
	"maps"
	"slices"

	dep "github.com/hashicorp/consul-template/dependency"
	"github.com/hashicorp/consul/api"

	"github.com/lbctl/lbctl/render"
)

// Screening: what a consul-template template sees of Consul passes the
// built-in template's rules (package render: CheckAddress, CheckPort,
// CheckPlain) unless the template has raw_consul_data. It works on what the
// watcher hands the brain, per dependency type, so every template function
// that reads that dependency sees the screened data:
//
//	service, connect   *dep.HealthServiceQuery     an instance that fails is left out
//	services           *dep.CatalogServicesQuery   a bad service name: the service is left out; a bad tag: that tag
//	nodes              *dep.CatalogNodesQuery      a node that fails is left out
//	node               *dep.CatalogNodeQuery       a bad node reads as no such node; a bad service on it is left out
//	key, keyOrDefault,
//	keyExists          *dep.KVGetQuery             a bad value reads as "" (the key still exists)
//	ls, safeLs, tree,
//	safeTree           *dep.KVListQuery            a pair whose key or value fails is left out
//	datacenters        *dep.CatalogDatacentersQuery a bad name is left out
//
// Everything else passes unchanged: caRoots and caLeaf (PEM from Consul's
// own CA), partitions, peerings, exportedServices and importedServices
// (written by operators with operator or mesh write rights, not by whoever
// registers a service), file (a local file). Vault and Nomad functions are
// refused (templates.go).

// leftOut is one thing screening kept from the templates, and why.
type leftOut struct {
	kind, id string // "service_id", "hello-1"; "key", "lb/x"...
	why      string
}

// screen returns data as templates see it, and what it left out. It never
// changes data: the watcher's views keep it, and raw templates read it.
func screen(d dep.Dependency, data any) (any, []leftOut) {
	if data == nil {
		return nil, nil
	}
	switch d.(type) {
	case *dep.HealthServiceQuery:
		return screenList(data.([]*dep.HealthService), "service_id", func(s *dep.HealthService) string { return s.ID }, screenHealthService)
	case *dep.CatalogServicesQuery:
		return screenServices(data.([]*dep.CatalogSnippet))
	case *dep.CatalogNodesQuery:
		return screenList(data.([]*dep.Node), "node", func(n *dep.Node) string { return n.Node }, checkNode)
	case *dep.CatalogNodeQuery:
		return screenNode(data.(*dep.CatalogNode))
	case *dep.KVGetQuery:
		v := data.(string)
		if err := render.CheckPlain(v); err != nil {
			return "", []leftOut{{"key", d.String(), "value " + err.Error() + "; read as empty"}}
		}
		return v, nil
	case *dep.KVListQuery:
		return screenList(data.([]*dep.KeyPair), "key", func(p *dep.KeyPair) string { return p.Path }, checkKeyPair)
	case *dep.CatalogDatacentersQuery:
		return screenList(data.([]string), "datacenter", func(s string) string { return s }, func(s string) (string, error) {
			return s, render.CheckPlain(s)
		})
	}
	return data, nil
}

// screenList keeps the items check passes (as check returns them) and
// reports the others by their id.
func screenList[T any](items []T, kind string, id func(T) string, check func(T) (T, error)) ([]T, []leftOut) {
	kept := make([]T, 0, len(items))
	var out []leftOut
	for _, item := range items {
		c, err := check(item)
		if err != nil {
			out = append(out, leftOut{kind, id(item), err.Error() + "; left out"})
			continue
		}
		kept = append(kept, c)
	}
	return kept, out
}

// screenHealthService checks every value of one instance a template can
// print. The checks' free text (name, notes, output, definition: an HTTP
// check's output has spaces) is emptied in the copy templates see; their
// identifiers are checked.
func screenHealthService(s *dep.HealthService) (*dep.HealthService, error) {
	err := errors.Join(
		field("address", render.CheckAddress(s.Address)),
		render.CheckPort(s.Port),
		plain("service ID", s.ID), plain("service name", s.Name), plain("status", s.Status),
		plainList("tag", s.Tags), plainMap("service meta", s.ServiceMeta),
		plain("node", s.Node), plain("node ID", s.NodeID),
		field("node address", render.CheckAddress(s.NodeAddress)),
		addressMap("node tagged address", s.NodeTaggedAddresses), plainMap("node meta", s.NodeMeta),
		serviceAddresses(s.ServiceTaggedAddresses),
	)
	checks := make(api.HealthChecks, 0, len(s.Checks))
	for _, c := range s.Checks {
		err = errors.Join(err, plain("check node", c.Node), plain("check ID", c.CheckID), plain("check status", c.Status),
			plain("check service ID", c.ServiceID), plain("check service name", c.ServiceName), plainList("check service tag", c.ServiceTags),
			plain("check type", c.Type), plain("check namespace", c.Namespace), plain("check partition", c.Partition), plain("check peer", c.PeerName))
		kept := *c
		kept.Name, kept.Notes, kept.Output, kept.Definition = "", "", "", api.HealthCheckDefinition{}
		checks = append(checks, &kept)
	}
	if err != nil {
		return nil, firstOnly(err)
	}
	kept := *s
	kept.Checks = checks
	return &kept, nil
}

func serviceAddresses(m map[string]api.ServiceAddress) error {
	for _, k := range slices.Sorted(maps.Keys(m)) {
		a := m[k]
		if err := errors.Join(plain("service tagged address name", k),
			field("service tagged address "+k, render.CheckAddress(a.Address)),
			field("service tagged address "+k, render.CheckPort(a.Port))); err != nil {
			return err
		}
	}
	return nil
}

func checkNode(n *dep.Node) (*dep.Node, error) {
	err := errors.Join(plain("node", n.Node), plain("node ID", n.ID), field("node address", render.CheckAddress(n.Address)),
		plain("datacenter", n.Datacenter), addressMap("tagged address", n.TaggedAddresses), plainMap("node meta", n.Meta))
	return n, firstOnly(err)
}

// screenNode screens node's data: a bad node reads as no such node, as
// consul-template returns it for a name Consul does not know.
func screenNode(n *dep.CatalogNode) (*dep.CatalogNode, []leftOut) {
	if n.Node == nil {
		return n, nil
	}
	if _, err := checkNode(n.Node); err != nil {
		return &dep.CatalogNode{}, []leftOut{{"node", n.Node.Node, err.Error() + "; read as no such node"}}
	}
	services, out := screenList(n.Services, "service_id", func(s *dep.CatalogNodeService) string { return s.ID }, checkNodeService)
	return &dep.CatalogNode{Node: n.Node, Services: services}, out
}

func checkNodeService(s *dep.CatalogNodeService) (*dep.CatalogNodeService, error) {
	addr := error(nil)
	if s.Address != "" { // empty: the node's address, checked with the node
		addr = field("address", render.CheckAddress(s.Address))
	}
	err := errors.Join(plain("service ID", s.ID), plain("service name", s.Service), addr, render.CheckPort(s.Port),
		plainList("tag", s.Tags), plainMap("service meta", s.Meta))
	return s, firstOnly(err)
}

// screenServices leaves out a service whose name fails, and from the
// others only the tags that fail: Consul lists the union of every
// instance's tags there, and one instance's bad tag must not hide the
// service from every template.
func screenServices(list []*dep.CatalogSnippet) ([]*dep.CatalogSnippet, []leftOut) {
	kept := make([]*dep.CatalogSnippet, 0, len(list))
	var out []leftOut
	for _, s := range list {
		if err := plain("service name", s.Name); err != nil {
			out = append(out, leftOut{"service", s.Name, err.Error() + "; left out"})
			continue
		}
		c := *s
		c.Tags = make(dep.ServiceTags, 0, len(s.Tags))
		for _, t := range s.Tags {
			if err := plain("tag", t); err != nil {
				out = append(out, leftOut{"service", s.Name, err.Error() + "; tag left out"})
				continue
			}
			c.Tags = append(c.Tags, t)
		}
		kept = append(kept, &c)
	}
	return kept, out
}

func checkKeyPair(p *dep.KeyPair) (*dep.KeyPair, error) {
	err := errors.Join(plain("path", p.Path), plain("key", p.Key), plain("value", p.Value), plain("session", p.Session))
	return p, firstOnly(err)
}

func plain(what, s string) error { return field(what, render.CheckPlain(s)) }

func field(what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s %w", what, err)
}

func plainList(what string, list []string) error {
	for _, s := range list {
		if err := plain(what, s); err != nil {
			return err
		}
	}
	return nil
}

// plainMap checks keys and values, in key order so the reason is stable.
func plainMap(what string, m map[string]string) error {
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if err := errors.Join(plain(what+" key", k), plain(what+" "+k, m[k])); err != nil {
			return err
		}
	}
	return nil
}

func addressMap(what string, m map[string]string) error {
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if err := errors.Join(plain(what+" name", k), field(what+" "+k, render.CheckAddress(m[k]))); err != nil {
			return err
		}
	}
	return nil
}

// firstOnly keeps the first of joined errors: one reason per log line.
func firstOnly(err error) error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		if errs := j.Unwrap(); len(errs) > 0 {
			return firstOnly(errs[0])
		}
	}
	return err
}
