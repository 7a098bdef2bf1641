package render

import (
	"bytes"
	"fmt"
	"net/netip"
	"regexp"
	"unicode"
	"unicode/utf8"
)

// The rules a value registered in Consul must pass before a template prints
// it. The built-in template and package render/consultemplate (which
// screens what consul-template templates see) both use these: one place
// for each rule.

// CheckPort accepts a port 1-65535.
func CheckPort(port int) error {
	if port < 1 || port > 65535 {
		return fmt.Errorf("port %d is not 1-65535", port)
	}
	return nil
}

// CheckAddress accepts an IP literal without an IPv6 zone, or an RFC 1123
// host name.
func CheckAddress(addr string) error {
	if isIP(addr) || isHostname(addr) {
		return nil
	}
	return fmt.Errorf("%q is not an IP or a host name", addr)
}

// CheckPlain accepts a value that carries no nginx config syntax: nothing
// that ends a directive or a block (";", "{", "}"), starts a string or a
// comment (quotes, "#"), escapes the next character ("\"), names a
// variable ("$"), or separates parameters (whitespace); no control
// characters and only valid UTF-8. Printed anywhere in a directive, such a
// value stays one parameter (or part of one) and adds nothing. The empty
// value passes.
func CheckPlain(s string) error {
	for i, r := range s {
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(s[i:]); size == 1 {
				return fmt.Errorf("%q is not valid UTF-8", s)
			}
		}
		if isNginxSyntax(r) {
			return fmt.Errorf("%q carries nginx syntax (%q)", s, r)
		}
	}
	return nil
}

func isNginxSyntax(r rune) bool {
	switch r {
	case ';', '{', '}', '"', '\'', '#', '\\', '$':
		return true
	}
	return unicode.IsSpace(r) || unicode.IsControl(r)
}

func isIP(s string) bool {
	ip, err := netip.ParseAddr(s)
	return err == nil && ip.Zone() == ""
}

var hostnameLabel = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)

// isHostname is RFC 1123: dot-separated labels of letters, digits and inner hyphens.
func isHostname(s string) bool {
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	labels := bytes.Split([]byte(s), []byte("."))
	for _, l := range labels {
		if !hostnameLabel.Match(l) {
			return false
		}
	}
	return true
}
