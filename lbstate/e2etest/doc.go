// Package e2etest holds the drain's end-to-end test: real Consul, real nginx
// driven by the load balancer as lbctl run builds it (package lb: render
// engine, reload controller, lbstate publisher), greeter backends drained by
// the registrar under gRPC load.
package e2etest
