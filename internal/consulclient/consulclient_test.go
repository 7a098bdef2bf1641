package consulclient

import (
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
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

func TestNewSpeaksTLSToAnHTTPSAgent(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/status/leader" || r.Header.Get("X-Consul-Token") != "secret" {
			http.Error(w, "unexpected "+r.URL.Path, http.StatusNotFound)
			return
		}
		io.WriteString(w, `"10.0.0.1:8300"`)
	}))
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(ca, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	client, err := New(config.Consul{Address: srv.URL, CAFile: ca, Token: "secret"})
	if err != nil {
		t.Fatal(err)
	}
	leader, err := client.Status().Leader()
	if err != nil || leader != "10.0.0.1:8300" {
		t.Fatalf("leader over TLS = %q, %v", leader, err)
	}
	untrusted, err := New(config.Consul{Address: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := untrusted.Status().Leader(); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("leader without the CA = %v, want a certificate error", err)
	}
}
