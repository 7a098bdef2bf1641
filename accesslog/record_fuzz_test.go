package accesslog

import (
	"net/netip"
	"regexp"
	"testing"
)

var knownLabel = regexp.MustCompile(`^([0-9]|1[0-6]|upstream_error|http_[1-5][0-9][0-9]|http_unknown)$`)

// Log lines carry values a client or backend chose (statuses, addresses
// after escaping): parsing never panics, and only known labels and real
// ip:port addresses come out, since both become keys in KV.
func FuzzParseLine(f *testing.F) {
	f.Add(`{"upstream":"127.0.0.1:7000","status":"200","grpc_status":"0","grpc_status_hdr":""}`)
	f.Add(`{"upstream":"127.0.0.1:1, [::1]:7001 : 10.0.0.1:80","status":"502","grpc_status":"","grpc_status_hdr":"13"}`)
	f.Add(`{"upstream":"x\"y","status":"-1","grpc_status":"99"}`)
	f.Fuzz(func(t *testing.T, line string) {
		r, err := ParseLine([]byte(line))
		if err != nil {
			return
		}
		for _, a := range r.Attempts() {
			if !knownLabel.MatchString(a.Label) {
				t.Fatalf("label %q", a.Label)
			}
			if _, err := netip.ParseAddrPort(a.Addr); err != nil {
				t.Fatalf("address %q: %v", a.Addr, err)
			}
		}
	})
}
