package lb

import (
	"errors"
	"strconv"
	"strings"

	"github.com/lbctl/lbctl/config"
	"github.com/lbctl/lbctl/internal/listensock"
	"github.com/lbctl/lbctl/supervisor"
)

// When the supervisor runs nginx, lbctl holds nginx's listening sockets,
// as systemd's socket activation does: it opens the built-in services'
// listens and, in live mode, the push socket itself (package listensock),
// and hands them to every nginx master it starts through nginx's inherited
// sockets (fds 3, 4, ... and NGINX="3;4;"; nginx matches them to its listen
// directives by address and binds the others itself). A master killed with
// SIGKILL then closes no port: calls wait in the kernel's accept queue
// until the next master's workers accept them, instead of being refused,
// and the next master starts as soon as the old workers were told to stop,
// since it needs no port freed (supervisor, listeners.go).
//
// The listens of templates and of the main config stay nginx's own. A
// service added by SIGHUP is bound by the running nginx itself, on its
// reload; the next master start opens it here. A service removed by SIGHUP
// has its socket closed at once, or the port would take calls nobody serves.

// holdSockets makes lbctl hold nginx's listening sockets when the
// supervisor runs nginx.
func (l *LB) holdSockets() {
	if !l.supervisesNginx() {
		return
	}
	l.sockets = &listensock.Set{}
	l.opts.Supervisor.BeforeStart(l.cfg.Nginx.Program, l.nginxSockets)
}

// nginxSockets is what each nginx master gets: the sockets lbctl holds for
// the current config. One that cannot be opened (a port taken, or one
// only nginx may bind) is left to nginx, which binds it itself or says
// why not, as it would without lbctl holding any.
func (l *LB) nginxSockets() (supervisor.Extras, error) {
	files, err := l.sockets.Open(l.socketAddrs())
	if errors.Is(err, listensock.ErrClosed) {
		return supervisor.Extras{}, nil // lbctl is stopping
	}
	if err != nil {
		l.log.Warn("listening sockets left to nginx to bind", "err", err)
	}
	if len(files) == 0 {
		return supervisor.Extras{}, nil
	}
	return supervisor.Extras{Files: files, Env: []string{inheritedSockets(len(files))}}, nil
}

// inheritedSockets is nginx's NGINX variable for n sockets at fds 3, 4, ...:
// each fd number followed by ';' (ngx_add_inherited_sockets).
func inheritedSockets(n int) string {
	var b strings.Builder
	b.WriteString("NGINX=")
	for fd := 3; fd < 3+n; fd++ {
		b.WriteString(strconv.Itoa(fd) + ";")
	}
	return b.String()
}

// socketAddrs are the sockets lbctl holds for the config being rendered.
func (l *LB) socketAddrs() []listensock.Addr {
	l.mu.Lock()
	defer l.mu.Unlock()
	return socketsFor(l.rendered, l.live)
}

// socketsFor are cfg's services' listens, and the push socket when live,
// as nginx binds them. A listen on a host name is left to nginx, which
// resolves it.
func socketsFor(cfg *config.Config, live bool) []listensock.Addr {
	var addrs []listensock.Addr
	for _, s := range cfg.Services {
		if a, err := listensock.FromListen(s.ListenAddr()); err == nil {
			addrs = append(addrs, a)
		}
	}
	if live {
		addrs = append(addrs, listensock.Unix(cfg.Nginx.LiveSocket()))
	}
	return addrs
}

// releaseRemovedSockets closes the sockets of services cfg no longer has;
// l.mu is held.
func (l *LB) releaseRemovedSockets(cfg *config.Config) {
	if l.sockets == nil {
		return
	}
	if err := l.sockets.Keep(socketsFor(cfg, l.live)); err != nil {
		l.log.Warn("closing the sockets of removed services", "err", err)
	}
}

// closeSockets closes every socket lbctl holds; nginx keeps its copies.
func (l *LB) closeSockets() {
	if l.sockets == nil {
		return
	}
	if err := l.sockets.Close(); err != nil {
		l.log.Warn("closing the listening sockets", "err", err)
	}
}

// supervisesNginx reports whether nginx is one of the supervisor's programs.
func (l *LB) supervisesNginx() bool {
	if l.opts.Supervisor == nil {
		return false
	}
	_, err := l.opts.Supervisor.StatusOf(l.cfg.Nginx.Program)
	return err == nil
}
