// Package multihost is lbctl's many-hosts end-to-end tests: three Consul
// servers, two load balancers (`lbctl run` + nginx with live upstreams), four
// app hosts (`lbctl register -- greeter-server`) and a client host, each a
// network namespace (package internal/hosts), under load and under faults.
// Each test prints its figures: calls, failed calls, times to detect and to
// converge, beside a timestamped log of every fault.
//
// The topology is docker-compose.yaml's: every host that is not a Consul
// server runs its own client agent, joined to all three servers, and lbctl
// talks only to that agent (127.0.0.1:8500 in the host's namespace), so no
// single server is a point of failure. The one difference: here the test
// starts each agent, where the images have lbctl run supervise it.
//
// They need root (skipped otherwise) and take a few minutes:
//
//	go test -v -count=1 ./multihost
package multihost
