package consultemplate

import (
	"context"
	"encoding/pem"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lbctl/lbctl/config"
	"github.com/lbctl/lbctl/internal/testrig"
)

// fakeHTTPSConsul answers the health query of the seed template over HTTPS
// and records the ACL token of the last request. It checks the wiring of
// TLS and tokens, which a -dev agent on plain HTTP cannot.
func fakeHTTPSConsul(t *testing.T) (srv *httptest.Server, caFile string, lastToken *atomic.Value) {
	lastToken = &atomic.Value{}
	lastToken.Store("")
	srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		lastToken.Store(r.Header.Get("X-Consul-Token"))
		if r.URL.Path != "/v1/health/service/hello_server" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("X-Consul-Index", "7")
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`[{"Node":{"Node":"n1","Address":"10.0.0.1"},"Service":{"ID":"a","Service":"hello_server","Address":"10.0.0.5","Port":9000},"Checks":[]}]`))
	}))
	t.Cleanup(srv.Close)
	caFile = filepath.Join(t.TempDir(), "ca.pem")
	cert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(caFile, cert, 0o600); err != nil {
		t.Fatal(err)
	}
	return srv, caFile, lastToken
}

func TestTLSAndTokenReachConsul(t *testing.T) {
	srv, caFile, lastToken := fakeHTTPSConsul(t)
	tokenFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tokenFile, []byte("from-file-token\n"), 0o600)
	addr := strings.TrimPrefix(srv.URL, "https://")
	yes := true
	for name, tc := range map[string]struct {
		consul    config.Consul
		wantToken string
	}{
		"https address, CA file, token": {config.Consul{Address: srv.URL, CAFile: caFile, Token: "inline-token"}, "inline-token"},
		"ssl flag, token file":          {config.Consul{Address: addr, SSL: &yes, CAFile: caFile, TokenFile: tokenFile}, "from-file-token"},
		"skip verify":                   {config.Consul{Address: srv.URL, InsecureSkipVerify: true}, ""},
		"server name":                   {config.Consul{Address: srv.URL, CAFile: caFile, TLSServerName: "example.com"}, ""},
	} {
		t.Run(name, func(t *testing.T) {
			e, err := New([]config.Template{templateConfig(t, seedTemplate)}, tc.consul, testLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			files, err := e.Once(ctx)
			if err != nil {
				t.Fatalf("Once: %v", err)
			}
			if !strings.Contains(string(files[0].Data), "server 10.0.0.5:9000;") {
				t.Errorf("want the fake instance, got\n%s", files[0].Data)
			}
			if got := lastToken.Load(); got != tc.wantToken {
				t.Errorf("Consul got token %q, want %q", got, tc.wantToken)
			}
		})
	}
}

func TestUnverifiedTLSFails(t *testing.T) {
	srv, _, _ := fakeHTTPSConsul(t)
	var logs testrig.LogBuffer
	e, err := New([]config.Template{templateConfig(t, seedTemplate)}, config.Consul{Address: srv.URL, Token: "hidden-token-9"},
		slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	// Once retries until its context ends; end it once the first failure is
	// logged (the session records it before it logs it).
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	res := make(chan error, 1)
	go func() { _, err := e.Once(ctx); res <- err }()
	testrig.WaitFor(t, 30*time.Second, "a failed Consul query to be logged", func() error {
		if !strings.Contains(logs.String(), "consul query failed") {
			return errors.New("not yet")
		}
		return nil
	})
	cancel()
	err = <-res
	if strings.Contains(logs.String(), "hidden-token-9") {
		t.Fatalf("the token is in the log:\n%s", logs.String())
	}
	if err == nil || !strings.Contains(err.Error(), "certificate") || strings.Contains(err.Error(), "hidden-token-9") {
		t.Fatalf("got %v, want a certificate error without the token", err)
	}
}

func TestBadTLSFilesAreNamed(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing-ca.pem")
	_, err := New([]config.Template{templateConfig(t, seedTemplate)},
		config.Consul{Address: "https://127.0.0.1:8501", CAFile: missing, Token: "hidden-token-9"}, testLogger(t))
	if err == nil || !strings.Contains(err.Error(), missing) || strings.Contains(err.Error(), "hidden-token-9") {
		t.Fatalf("got %v, want an error naming %s without the token", err, missing)
	}
}
