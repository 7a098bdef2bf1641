// Package live changes nginx's upstream peers without a reload. lbctl pushes
// each upstream's peers as JSON over a unix socket to a Lua handler in nginx
// (live.lua, run by the lua module), which keeps them in a lua_shared_dict
// that every worker shares, old workers still finishing after a reload
// included; balancer_by_lua picks a peer per call, and the next call in every
// worker uses a new set. This package is the Go side: the payload types, the
// client, the seed file and the http-level nginx config.
package live

import (
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"

	"github.com/lbctl/lbctl/internal/atomicfile"
)

// Dict is the lua_shared_dict that holds the live upstreams.
const Dict = "lbctl_live"

//go:embed live.lua
var luaSource string

// Peer is one backend of an upstream.
type Peer struct {
	Host   string `json:"host"`         // IP literal, IPv6 without brackets ("::1")
	Port   int    `json:"port"`         // 1..65535
	Weight int    `json:"weight"`       // 1..10000
	ID     string `json:"id,omitempty"` // Consul service ID, shown by status; [A-Za-z0-9._:@-] only
}

// Upstream is the peers of one nginx upstream and their version.
type Upstream struct {
	Version string `json:"version"` // VersionOf(Peers)
	Peers   []Peer `json:"peers"`
}

// Set is upstreams by nginx upstream name (^[A-Za-z0-9_]{1,200}$).
type Set map[string]Upstream

// NewUpstream is peers with their version.
func NewUpstream(peers []Peer) Upstream {
	if peers == nil {
		peers = []Peer{}
	}
	return Upstream{Version: VersionOf(peers), Peers: peers}
}

// VersionOf is the first 16 lowercase hex digits of the SHA-256 of the peers'
// JSON as encoding/json writes it, in the order given (nil is the empty list).
func VersionOf(peers []Peer) string {
	if peers == nil {
		peers = []Peer{}
	}
	b, err := json.Marshal(peers)
	if err != nil {
		panic(err) // strings and ints always marshal
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// push is the body of POST /v1/upstreams, and of the seed file.
type push struct {
	Prune     bool `json:"prune"`
	Upstreams Set  `json:"upstreams"`
}

func encodePush(set Set, prune bool) ([]byte, error) {
	out := make(Set, len(set))
	for name, u := range set {
		if u.Peers == nil {
			u.Peers = []Peer{} // "null" is not an array
		}
		out[name] = u
	}
	return json.Marshal(push{Prune: prune, Upstreams: out})
}

// RejectedError is nginx refusing a push (HTTP 400): it kept its last good set.
type RejectedError struct{ Reason string }

func (e *RejectedError) Error() string { return "nginx refused the upstreams: " + e.Reason }

// Client talks to the live API on nginx's unix socket.
type Client struct {
	socket string
	http   *http.Client
}

// NewClient is a client of the live API listening on the unix socket path.
func NewClient(socket string) *Client {
	dialer := &net.Dialer{}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, "unix", socket)
		},
		MaxIdleConns: 1,
	}
	return &Client{socket: socket, http: &http.Client{Transport: tr}}
}

// Push sends set; with prune, nginx also drops every upstream not in set. It
// returns the versions nginx holds afterwards, read back from shared memory
// (held[name] == set[name].Version for every name when applied): with
// prune every upstream nginx holds, without it those set names. A refused
// payload is a *RejectedError.
func (c *Client) Push(ctx context.Context, set Set, prune bool) (held map[string]string, err error) {
	body, err := encodePush(set, prune)
	if err != nil {
		return nil, err
	}
	var out struct {
		Upstreams map[string]string `json:"upstreams"`
	}
	if err := c.do(ctx, http.MethodPost, body, &out); err != nil {
		return nil, err
	}
	if out.Upstreams == nil {
		out.Upstreams = map[string]string{}
	}
	return out.Upstreams, nil
}

// Read returns what nginx holds now.
func (c *Client) Read(ctx context.Context) (Set, error) {
	var out struct {
		Upstreams Set `json:"upstreams"`
	}
	if err := c.do(ctx, http.MethodGet, nil, &out); err != nil {
		return nil, err
	}
	if out.Upstreams == nil {
		out.Upstreams = Set{}
	}
	return out.Upstreams, nil
}

// do sends one request to /v1/upstreams and decodes a 200 answer into out.
func (c *Client) do(ctx context.Context, method string, body []byte, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://lbctl-live/v1/upstreams", rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("nginx live API on %s: %w", c.socket, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("nginx live API on %s: %s: %w", c.socket, method, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(data))
		}
		if resp.StatusCode == http.StatusBadRequest {
			return &RejectedError{Reason: e.Error}
		}
		return fmt.Errorf("nginx live API on %s: %s: %s: %s", c.socket, method, resp.Status, e.Error)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("nginx live API on %s: %s: bad answer: %w", c.socket, method, err)
	}
	return nil
}

// WriteSeed writes set to path as a Seed does, encoding every upstream.
func WriteSeed(path string, set Set) error { return NewSeed(path).Write(set) }

// Seed is the seed file: set written atomically, mode 0600, as the body of a
// push with prune; nginx loads it at start-up for the upstreams its shared
// dict does not hold yet. A Seed keeps each upstream's JSON while its version
// stays, so a write after one instance change encodes one upstream: at 1,000
// upstreams of 10 peers, encoding them all on every change was 40% of lbctl's
// CPU under churn (cmd/lbctl-bench-scale, 10 changes a second).
//
// It does not fsync: the seed only matters while the machine is up (an
// nginx restarted after a crash; after a reboot lbctl pushes anew), and the
// reload controller writes it with every change, where an fsync cost 2-18 ms
// on a loaded disk against ~1 ms for the push itself. A seed a machine crash
// left empty or cut is refused by nginx, logged, and replaced by the first
// push. A Seed is not safe for concurrent use.
type Seed struct {
	path    string
	names   []string             // the upstreams of the last write, sorted
	entries map[string]seedEntry // ...and their entries
}

// seedEntry is one upstream's `"name":{...}` in the seed, at version.
type seedEntry struct {
	version string
	json    []byte
}

// NewSeed is the seed file at path.
func NewSeed(path string) *Seed { return &Seed{path: path} }

// Write replaces the file with set.
func (s *Seed) Write(set Set) error {
	body, err := s.encode(set)
	if err != nil {
		return err
	}
	return atomicfile.ReplaceVolatile(s.path, body, 0o600)
}

// encode is set as encodePush(set, true) writes it, and a newline, from the
// entries kept for the upstreams whose version did not change.
func (s *Seed) encode(set Set) ([]byte, error) {
	if !s.holdsNames(set) {
		s.names = slices.Sorted(maps.Keys(set)) // encoding/json's map order
		maps.DeleteFunc(s.entries, func(name string, _ seedEntry) bool { _, ok := set[name]; return !ok })
	}
	if s.entries == nil {
		s.entries = make(map[string]seedEntry, len(set))
	}
	size := 0
	for _, name := range s.names {
		e, err := s.entry(name, set[name])
		if err != nil {
			return nil, err
		}
		s.entries[name], size = e, size+len(e.json)+1
	}
	b := make([]byte, 0, size+64)
	b = append(b, `{"prune":true,"upstreams":{`...)
	for i, name := range s.names {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, s.entries[name].json...)
	}
	return append(b, "}}\n"...), nil
}

// holdsNames says whether s.names are set's upstream names.
func (s *Seed) holdsNames(set Set) bool {
	if s.names == nil || len(s.names) != len(set) {
		return false
	}
	for _, name := range s.names {
		if _, ok := set[name]; !ok {
			return false
		}
	}
	return true
}

// entry is u's entry, the kept one when its version is u's.
func (s *Seed) entry(name string, u Upstream) (seedEntry, error) {
	if e, ok := s.entries[name]; ok && e.version == u.Version {
		return e, nil
	}
	if u.Peers == nil {
		u.Peers = []Peer{} // "null" is not an array
	}
	key, err := json.Marshal(name)
	if err != nil {
		return seedEntry{}, err
	}
	val, err := json.Marshal(u)
	if err != nil {
		return seedEntry{}, err
	}
	return seedEntry{version: u.Version, json: slices.Concat(key, []byte{':'}, val)}, nil
}

// HTTPConfig is the http-level nginx config for live mode: the shared dict of
// dictSize (e.g. "32m"), an init_by_lua_block that defines the Lua module
// lbctl_live and loads the seed file, and a server on unix:socket serving the
// API. Upstreams use it with
//
//	upstream NAME { server 0.0.0.1:1; balancer_by_lua_block { require("lbctl_live").balance("NAME") } keepalive N; }
//
// and their locations with
//
//	access_by_lua_block { require("lbctl_live").gate("NAME", "SERVICE") }
//
// `nginx -t` (Debian's lua module 0.10.23) does not run init_by_lua, so it
// neither compiles the Lua nor reads the seed; starting or reloading does.
func HTTPConfig(socket, seed, dictSize string) string {
	return fmt.Sprintf(`lua_shared_dict %s %s;
init_by_lua_block {
package.loaded.lbctl_live = (function()
%s
end)()
package.loaded.lbctl_live.init(%s)
}
server {
    listen %s;
    access_log off;
    client_max_body_size 64m;
    client_body_buffer_size 1m;
    location / {
        content_by_lua_block { require("lbctl_live").api() }
    }
}
`, Dict, dictSize, luaSource, luaString(seed), nginxString("unix:"+socket))
}

// luaString is s as a double-quoted Lua string, every byte outside printable
// ASCII (and quote and backslash) as a decimal escape.
func luaString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			fmt.Fprintf(&b, "\\%03d", c)
		} else {
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// nginxString is s as a double-quoted nginx argument.
func nginxString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	return `"` + r.Replace(s) + `"`
}
