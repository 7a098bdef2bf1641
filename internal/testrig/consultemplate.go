package testrig

import (
	"path/filepath"
	"testing"
)

// ConsulTemplateVersion is the consul-template scripts/install-deps.sh
// installs: the version go.mod requires, so the binary and the library
// lbctl renders with are the same code.
const ConsulTemplateVersion = "0.43.0"

// ConsulTemplatePath is where scripts/install-deps.sh installs it.
func ConsulTemplatePath() string {
	return filepath.Join(CacheDir(), "consul-template-"+ConsulTemplateVersion, "consul-template")
}

// ConsulTemplateBinary finds the consul-template installed by
// scripts/install-deps.sh (or $LBCTL_CONSUL_TEMPLATE), the reference lbctl's
// template output is compared against.
func ConsulTemplateBinary(t testing.TB) string {
	return findBinary(t, "consul-template", "LBCTL_CONSUL_TEMPLATE", ConsulTemplatePath())
}
