package metrics

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestServesMetricsAndHealth(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	m.ConsulErrors.Inc()
	m.Reloads.WithLabelValues(OutcomeApplied).Inc()
	var unhealthy error
	lis, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, lis, Handler(reg, func() error { return unhealthy }), slog.New(slog.DiscardHandler))
	}()
	base := "http://" + lis.Addr().String()

	body := get(t, base+"/metrics", 200)
	for _, want := range []string{`lbctl_consul_errors_total 1`, `lbctl_reloads_total{outcome="applied"} 1`,
		`lbctl_reloads_total{outcome="rejected"} 0`, `lbctl_change_to_serving_seconds_bucket`} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	get(t, base+"/healthz", 200)
	unhealthy = errors.New("nginx master gone")
	if body := get(t, base+"/healthz", 503); !strings.Contains(body, "nginx master gone") {
		t.Errorf("healthz body %q", body)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestListenRefusesNonLoopback(t *testing.T) {
	if _, err := Listen("0.0.0.0:0"); err == nil {
		t.Fatal("want an error for 0.0.0.0")
	}
}

func get(t *testing.T, url string, code int) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != code {
		t.Fatalf("GET %s: %d, want %d: %s", url, resp.StatusCode, code, b)
	}
	return string(b)
}
