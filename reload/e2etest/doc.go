// Package e2etest holds the reload controller's end-to-end tests: the whole
// pipeline as lbctl run builds it (package lb) against a real Consul, a real
// nginx and real gRPC greeters, under load. They live outside package reload
// because package lb imports reload.
package e2etest
