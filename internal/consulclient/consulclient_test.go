package consulclient

import (
	"context"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/lbctl/lbctl/config"
	"github.com/lbctl/lbctl/internal/testrig"
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

func TestCreateSessionWaitsForAStartingAgent(t *testing.T) {
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch requests.Add(1) {
		case 1:
			http.Error(w, "No cluster leader", http.StatusInternalServerError)
		case 2:
			http.Error(w, "apply failed: Missing node registration", http.StatusInternalServerError)
		default:
			io.WriteString(w, `{"ID":"s-1"}`)
		}
	}))
	defer srv.Close()
	client, err := api.NewClient(&api.Config{Address: srv.Listener.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	id, err := CreateSession(context.Background(), client, &api.SessionEntry{TTL: "10s"})
	if err != nil || id != "s-1" || requests.Load() != 3 {
		t.Fatalf("got %q, %v after %d requests; want s-1 after 3", id, err, requests.Load())
	}
}

func TestCreateSessionReturnsOtherErrorsAtOnce(t *testing.T) {
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		http.Error(w, "Permission denied", http.StatusForbidden)
	}))
	defer srv.Close()
	client, err := api.NewClient(&api.Config{Address: srv.Listener.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := CreateSession(context.Background(), client, &api.SessionEntry{}); err == nil || requests.Load() != 1 {
		t.Fatalf("got %v after %d requests; want the 403 after 1", err, requests.Load())
	}
}

// A real agent that has just started: no leader yet, its node not registered.
func TestCreateSessionOnAnAgentThatHasJustStarted(t *testing.T) {
	c := testrig.StartConsul(t, testrig.ConsulOptions{Early: true})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	id, err := CreateSession(ctx, c.Client, &api.SessionEntry{TTL: "10s"})
	if err != nil || id == "" {
		t.Fatalf("create session on a starting agent: %q, %v", id, err)
	}
}
