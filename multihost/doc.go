// Package multihost is lbctl's many-hosts end-to-end tests: three Consul
// servers, two load balancers (`lbctl run` + nginx with live upstreams), four
// app hosts (`lbctl register -- greeter-server`) and a client host, each a
// network namespace (package internal/hosts), under load and under faults.
// Each test prints its figures: calls, failed calls, times to detect and to
// converge, beside a timestamped log of every fault.
//
// They need root (skipped otherwise) and take a few minutes:
//
//	go test -v -count=1 ./multihost
package multihost
