// Package accesslog turns nginx's access log into per-version counts of gRPC
// status codes: it tails the JSON lines the built-in template has nginx
// write (LogFormat), maps each upstream address to the Consul instance
// behind it and so to its tags and meta version, and publishes the counts
// to Consul KV at lbctl/stats/<lb>/<service>, where lbctl shift reads the
// error rate of the version it is moving traffic to.
package accesslog

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// FormatName is the nginx log_format the built-in template defines.
const FormatName = "lbctl_grpc"

// LogFormat is the log_format directive's format string (escape=json). It
// must stay in step with templates/grpc.conf.tmpl (a test checks).
//
//   - upstream: every address tried, "a, b" (nginx moved on after a failure);
//   - grpc_status: the grpc-status trailer of a normal response;
//   - grpc_status_hdr: grpc-status in the headers of a trailers-only response
//     (how servers answer most errors);
//   - status: the HTTP status nginx sent (502 when no upstream answered).
const LogFormat = `{"time":"$time_iso8601","upstream":"$upstream_addr","status":"$status",` +
	`"grpc_status":"$upstream_trailer_grpc_status","grpc_status_hdr":"$upstream_http_grpc_status"}`

// Record is one parsed log line.
type Record struct {
	Upstream      string `json:"upstream"`
	Status        string `json:"status"`
	GRPCStatus    string `json:"grpc_status"`
	GRPCStatusHdr string `json:"grpc_status_hdr"`
}

// ParseLine parses one JSON log line.
func ParseLine(line []byte) (Record, error) {
	var r Record
	if err := json.Unmarshal(line, &r); err != nil {
		return Record{}, fmt.Errorf("access log line: %w", err)
	}
	return r, nil
}

// Attempt is one upstream that saw the call and what it came to.
type Attempt struct {
	Addr  string // normalised ip:port
	Label string // a gRPC code ("0", "14"), "upstream_error" or "http_502"
}

// Attempts lists the upstreams a call went to: every address but the last
// failed (nginx moved on), the last has the call's outcome. Addresses that
// are not ip:port (a unix socket, an upstream name) are left out.
func (r Record) Attempts() []Attempt {
	addrs := splitUpstreams(r.Upstream)
	var out []Attempt
	for i, a := range addrs {
		addr, ok := normalizeAddr(a)
		if !ok {
			continue
		}
		label := UpstreamError
		if i == len(addrs)-1 {
			label = r.Outcome()
		}
		out = append(out, Attempt{Addr: addr, Label: label})
	}
	return out
}

// Outcome is the call's gRPC status, or http_<status> when there was none.
func (r Record) Outcome() string {
	for _, s := range []string{r.GRPCStatus, r.GRPCStatusHdr} {
		if n, err := strconv.Atoi(s); err == nil && n >= 0 && n <= 16 {
			return strconv.Itoa(n)
		}
	}
	if n, err := strconv.Atoi(r.Status); err == nil && n >= 100 && n <= 599 {
		return "http_" + strconv.Itoa(n)
	}
	return "http_unknown"
}

// UpstreamError labels an attempt nginx gave up on (connect error, timeout).
const UpstreamError = "upstream_error"

// IsError reports whether an outcome counts against a version: the gRPC
// codes a broken server causes (UNKNOWN, DEADLINE_EXCEEDED, INTERNAL,
// UNAVAILABLE, DATA_LOSS), failed attempts, and HTTP 5xx without a gRPC
// status. Codes a client causes (NOT_FOUND, CANCELLED...) do not.
func IsError(label string) bool {
	switch label {
	case "2", "4", "13", "14", "15", UpstreamError:
		return true
	}
	return strings.HasPrefix(label, "http_5")
}

// splitUpstreams splits "$upstream_addr": ", " between servers of one
// upstream and " : " between upstreams after an internal redirect.
func splitUpstreams(s string) []string {
	var out []string
	for _, group := range strings.Split(s, " : ") {
		for _, a := range strings.Split(group, ",") {
			if a = strings.TrimSpace(a); a != "" {
				out = append(out, a)
			}
		}
	}
	return out
}

// normalizeAddr turns "127.0.0.1:7000" or "[::1]:7000" into netip's form.
func normalizeAddr(s string) (string, bool) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return "", false
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()).String(), true
}

func joinHostPort(host string, port int) string {
	if strings.Contains(host, ":") {
		return "[" + host + "]:" + strconv.Itoa(port)
	}
	return host + ":" + strconv.Itoa(port)
}
