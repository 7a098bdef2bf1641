package testrig

import (
	"path/filepath"
	"testing"
)

// ConsulTemplateBinary finds the consul-template installed by
// scripts/install-deps.sh (or $LBCTL_CONSUL_TEMPLATE), the reference lbctl's
// template output is compared against.
func ConsulTemplateBinary(t testing.TB) string {
	return findBinary(t, "consul-template", "LBCTL_CONSUL_TEMPLATE",
		filepath.Join(CacheDir(), "consul-template-0.41.1", "consul-template"))
}
