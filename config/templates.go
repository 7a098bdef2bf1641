package config

import "fmt"

// Template is a consul-template template rendered unchanged into Destination.
type Template struct {
	// Source is the template file.
	Source string `yaml:"source"`
	// Destination is the file it renders to.
	Destination string `yaml:"destination"`
	// LeftDelim and RightDelim replace "{{" and "}}" when set.
	LeftDelim  string `yaml:"left_delimiter"`
	RightDelim string `yaml:"right_delimiter"`
	// Perms is the destination's file mode (default 0644).
	Perms uint32 `yaml:"perms"`
	// RawConsulData gives the template Consul's data unscreened: without
	// it, instances, nodes, names, tags, meta and KV values that carry
	// nginx syntax are left out of what the template sees.
	RawConsulData bool `yaml:"raw_consul_data"`
}

func validateTemplates(templates []Template, report reporter) {
	dests := map[string]int{}
	for i, t := range templates {
		at := func(key string) string { return fmt.Sprintf("templates[%d].%s", i, key) }
		if t.Source == "" {
			report(at("source"), "required: the template file")
		}
		if t.Destination == "" {
			report(at("destination"), "required: the file to write")
		} else if j, dup := dests[t.Destination]; dup {
			report(at("destination"), "%s is already written by templates[%d]", t.Destination, j)
		} else {
			dests[t.Destination] = i
		}
	}
}
