package lb

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/lbctl/lbctl/catalog"
	"github.com/lbctl/lbctl/config"
	"github.com/lbctl/lbctl/lbstate"
	"github.com/lbctl/lbctl/render"
)

// stuckConsul answers session creation and holds the first KV write until
// release is closed, as a Consul that takes seconds to answer would.
type stuckConsul struct {
	writing chan struct{} // closed when the first KV write arrives
	release chan struct{}
	writes  chan lbstate.State
}

func (c *stuckConsul) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/v1/session/create":
		io.WriteString(w, `{"ID":"s1"}`)
	case strings.HasPrefix(r.URL.Path, "/v1/kv/"+lbstate.Prefix):
		var st lbstate.State
		json.NewDecoder(r.Body).Decode(&st)
		select {
		case <-c.writing:
		default:
			close(c.writing)
			<-c.release
		}
		c.writes <- st
		io.WriteString(w, "true")
	default:
		http.NotFound(w, r)
	}
}

// The reload controller calls OnApplied holding its lock; the drain state
// is handed on there and written outside it: an Apply returns while Consul
// hangs on the previous write, and of the states applied meanwhile only the
// newest is written next.
func TestAppliedStateIsPublishedOutsideTheControllerLockNewestWins(t *testing.T) {
	consul := &stuckConsul{writing: make(chan struct{}), release: make(chan struct{}), writes: make(chan lbstate.State, 4)}
	srv := httptest.NewServer(consul)
	defer srv.Close()
	defer close(consul.release)
	client, err := api.NewClient(&api.Config{Address: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(t.TempDir(), "lbctl.conf")
	if err := os.WriteFile(dest, []byte("# live\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{LBID: "lb-1", Services: []config.Service{{Name: "greeter", Listen: "127.0.0.1:1"}},
		Nginx: config.Nginx{ServicesConf: dest}}
	cfg.SetDefaults()
	l, err := New(cfg, Options{Consul: client})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- l.publishApplied(ctx) }()
	defer func() { cancel(); <-done }()

	q := render.QueryOf(cfg.Services[0])
	apply := func(index uint64) {
		t.Helper()
		// Bytes already live: Apply only reports the update (OnApplied).
		u := render.Update{Files: []render.File{{Path: dest, Data: []byte("# live\n"), Perms: 0o644, Source: "builtin"}},
			Index: index, Indexes: map[catalog.Query]uint64{q: index}}
		returned := make(chan struct{})
		go func() { l.Apply(ctx, u); close(returned) }()
		select {
		case <-returned:
		case <-time.After(10 * time.Second):
			t.Fatalf("Apply of index %d waited for Consul", index)
		}
	}
	apply(1)
	<-consul.writing // the write of index 1 hangs in Consul
	apply(2)
	apply(3)
	consul.release <- struct{}{}
	for _, want := range []uint64{1, 3} {
		st := <-consul.writes
		if len(st.Queries) != 1 || st.Queries[0].Index != want {
			t.Fatalf("published %+v, want index %d (newest wins, 2 skipped)", st.Queries, want)
		}
	}
	select {
	case st := <-consul.writes:
		t.Fatalf("published %+v after the newest state", st.Queries)
	default:
	}
}
