package shift

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// pastKV is a fake Consul KV endpoint for the splits: it answers the first
// read with present (index 20), and from the first blocking query on every
// other read from its past (an older split at index 5, as a server just
// elected leader does while it applies its raft log); a ?consistent read,
// once released, gets next (index 30).
type pastKV struct {
	present, past, next Split
	consistent          chan struct{} // a consistent read arrived
	release             chan struct{} // answer it
	mu                  sync.Mutex
	servedPast          bool
}

func (k *pastKV) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	k.mu.Lock()
	if q.Get("index") != "" {
		k.servedPast = true
	}
	inPast := k.servedPast
	k.mu.Unlock()
	split, index := k.present, 20
	switch {
	case q.Has("consistent"):
		k.consistent <- struct{}{}
		<-k.release
		split, index = k.next, 30
	case inPast && (q.Get("index") == "5" || q.Get("index") == "30"):
		<-r.Context().Done() // nothing changes any more
		return
	case inPast:
		split, index = k.past, 5
	}
	value, _ := json.Marshal(split)
	w.Header().Set("X-Consul-Index", fmt.Sprint(index))
	json.NewEncoder(w).Encode([]map[string]any{{"Key": SplitKey(split.Service), "Value": base64.StdEncoding.EncodeToString(value), "ModifyIndex": index}})
}

// A split from the server's past is never sent: the watcher asks again
// with a consistent read and sends what that answers.
func TestWatcherTakesNoSplitFromTheServersPast(t *testing.T) {
	running := Split{Service: "greeter", From: "blue", To: "green", State: Running}
	kv := &pastKV{present: running.At(50), past: running.At(10), next: running.At(100),
		consistent: make(chan struct{}), release: make(chan struct{})}
	srv := httptest.NewServer(kv)
	defer srv.Close()
	defer close(kv.release)
	client, err := api.NewClient(&api.Config{Address: srv.Listener.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	w := NewWatcher(client, slog.New(slog.NewTextHandler(io.Discard, nil)))
	w.MinGap = time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := make(chan map[string]Split, 1)
	go w.Run(ctx, out)

	want := func(percent int, when string) {
		t.Helper()
		select {
		case splits := <-out:
			if got := splits["greeter"].ToPercent(); got != percent {
				t.Fatalf("%s: sent green at %d%%, want %d%%", when, got, percent)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: nothing sent within 10s", when)
		}
	}
	want(50, "first read")
	select {
	case <-kv.consistent: // the past answer was handled (Run emits before its next request)
	case splits := <-out:
		t.Fatalf("sent %d%% from the server's past", splits["greeter"].ToPercent())
	case <-time.After(10 * time.Second):
		t.Fatal("no consistent read within 10s of the answer from the past")
	}
	select {
	case splits := <-out:
		t.Fatalf("sent %d%% from the server's past", splits["greeter"].ToPercent())
	default:
	}
	kv.release <- struct{}{}
	want(100, "consistent read")
}
