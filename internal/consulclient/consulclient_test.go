package consulclient

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/lbctl/lbctl/config"
)

func TestAPIConfigReadsTokenFileAndScheme(t *testing.T) {
	f := filepath.Join(t.TempDir(), "token")
	os.WriteFile(f, []byte("file-token\n"), 0o600)
	cfg, err := APIConfig(config.Consul{Address: "https://consul.internal:8501", TokenFile: f})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Token != "file-token" || cfg.Scheme != "https" || cfg.Address != "consul.internal:8501" {
		t.Fatalf("got token %q scheme %q address %q", cfg.Token, cfg.Scheme, cfg.Address)
	}
}

func TestTokenWinsOverTokenFile(t *testing.T) {
	got, err := Token(config.Consul{Token: "direct", TokenFile: "/does/not/exist"})
	if err != nil || got != "direct" {
		t.Fatalf("got %q, %v; want the token itself", got, err)
	}
}

func TestMissingTokenFileIsAnError(t *testing.T) {
	if _, err := Token(config.Consul{TokenFile: filepath.Join(t.TempDir(), "missing")}); err == nil {
		t.Fatal("want an error for a missing token file")
	}
}
