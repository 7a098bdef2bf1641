// Package control is the unix-socket endpoint through which `lbctl status`
// and `lbctl ctl` talk to a running lbctl: a small HTTP API, JSON in and out.
// It is the only way to change anything in a running lbctl; the read-only
// /metrics and /healthz listener never serves it.
//
//	GET  /v1/status                          -> {"programs": [Status...]}
//	POST /v1/programs/{name}/start|stop|restart
//	POST /v1/programs/{name}/signal?signal=USR1
//
// Errors come back as {"error": "..."} with 404 for an unknown program, 409
// for a start of a started program, 400 for a bad signal.
package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/lbctl/lbctl/config"
	"github.com/lbctl/lbctl/supervisor"
)

// Supervisor is what the endpoint drives; *supervisor.Supervisor is one.
type Supervisor interface {
	Status() []supervisor.Status
	Start(ctx context.Context, name string) error
	Stop(ctx context.Context, name string) error
	Restart(ctx context.Context, name string) error
	Signal(ctx context.Context, name string, sig syscall.Signal) error
}

// StatusReply is the body of GET /v1/status.
type StatusReply struct {
	Programs []supervisor.Status `json:"programs"`
	// Now is the server's clock, for uptimes.
	Now time.Time `json:"now"`
}

type errorReply struct {
	Error string `json:"error"`
}

// Handler serves the API for sup.
func Handler(sup Supervisor, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, StatusReply{Programs: sup.Status(), Now: time.Now()})
	})
	actions := map[string]func(context.Context, string) error{
		"start": sup.Start, "stop": sup.Stop, "restart": sup.Restart,
	}
	mux.HandleFunc("POST /v1/programs/{name}/{action}", func(w http.ResponseWriter, r *http.Request) {
		name, action := r.PathValue("name"), r.PathValue("action")
		var err error
		switch fn, ok := actions[action]; {
		case ok:
			err = fn(r.Context(), name)
		case action == "signal":
			sig, perr := config.ParseSignal(r.URL.Query().Get("signal"))
			if perr != nil {
				writeJSON(w, http.StatusBadRequest, errorReply{perr.Error()})
				return
			}
			err = sup.Signal(r.Context(), name, sig)
		default:
			writeJSON(w, http.StatusNotFound, errorReply{fmt.Sprintf("unknown action %q (want start, stop, restart, signal)", action)})
			return
		}
		log.Info("control", "action", action, "program", name, "err", err)
		if err != nil {
			writeJSON(w, statusFor(err), errorReply{err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, struct{}{})
	})
	return mux
}

func statusFor(err error) int {
	switch {
	case errors.Is(err, supervisor.ErrUnknownProgram):
		return http.StatusNotFound
	case errors.Is(err, supervisor.ErrAlreadyStarted), errors.Is(err, supervisor.ErrNotRunning):
		return http.StatusConflict
	}
	return http.StatusInternalServerError
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// Socket is a listening control socket.
type Socket struct {
	lis  *net.UnixListener
	path string
}

// Listen creates the unix socket at path with file mode mode. The socket is
// bound under a temporary name, chmod-ed, then renamed into place, so it is
// never reachable with looser permissions. A socket a live lbctl still
// answers on is an error; a stale one is replaced.
func Listen(path string, mode os.FileMode) (*Socket, error) {
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("control socket %s: another lbctl is listening on it", path)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("control socket dir: %w", err)
	}
	tmp := path + ".tmp" + strconv.Itoa(os.Getpid())
	_ = os.Remove(tmp)
	lis, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	lis.SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, mode); err != nil {
		lis.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("control socket mode: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		lis.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return &Socket{lis: lis, path: path}, nil
}

// Path is where the socket lives.
func (s *Socket) Path() string { return s.path }

// Serve serves h until ctx ends, then closes the socket and removes its file.
func (s *Socket) Serve(ctx context.Context, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(s.lis) }()
	defer os.Remove(s.path)
	select {
	case err := <-errc:
		return fmt.Errorf("control socket: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = srv.Shutdown(shutdownCtx)
	return nil
}
