// Package e2etest holds the drain's end-to-end test: real Consul, real nginx
// driven by the render engine and the reload controller, a real lbstate
// publisher, greeter backends drained by the registrar under gRPC load. It
// stands in for `lbctl run` until that command wires the same parts.
package e2etest
