// Package templates holds lbctl's built-in nginx templates, embedded in the
// binary. grpc.conf.tmpl renders one upstream and one gRPC server block per
// configured service; every value it prints has been checked by the renderer.
package templates

import _ "embed"

// GRPC is the built-in template for gRPC services behind nginx.
//
//go:embed grpc.conf.tmpl
var GRPC string
