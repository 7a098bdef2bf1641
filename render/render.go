// Package render turns Consul health data into nginx config bytes: the
// built-in gRPC template (see templates/) and consul-template templates
// (package render/consultemplate). It never writes files or touches nginx:
// it hands Updates to whoever applies them (the reload controller, or
// `lbctl render --once`).
package render

import (
	"io/fs"
	"time"

	"github.com/lbctl/lbctl/catalog"
	"github.com/lbctl/lbctl/live"
)

// File is the full content one destination should have.
type File struct {
	// Path is the destination file.
	Path string
	// Data is the rendered bytes.
	Data []byte
	// Perms is the destination's file mode.
	Perms fs.FileMode
	// Source names what produced it ("builtin" or the template's path), for
	// error messages such as a failed nginx -t.
	Source string
}

// Update is one complete render of every destination after a Consul change.
type Update struct {
	// Files holds every destination, changed or not; the applier compares bytes.
	Files []File
	// Seen is when the Consul change behind this render was observed, for the
	// change-to-serving latency histogram.
	Seen time.Time
	// Index is the highest Consul index the data reflects.
	Index uint64
	// Indexes is the Consul index of each health query's answer behind the
	// built-in template, for the drain protocol (package lbstate).
	Indexes map[catalog.Query]uint64
	// Changes describes what changed since the previous update, one line each
	// ("greeter: +127.0.0.1:7001"), for the reload log line.
	Changes []string
	// Live is every built-in upstream's peers when live upstreams are on
	// (pushed to nginx, not written into Files); nil in reload mode.
	Live live.Set
}
