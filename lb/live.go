package lb

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/lbctl/lbctl/config"
	"github.com/lbctl/lbctl/live"
	"github.com/lbctl/lbctl/reload"
	"github.com/lbctl/lbctl/render"
	"github.com/lbctl/lbctl/supervisor"
)

// luaMissing is what nginx -t says of the Lua module's first directive
// when the main config does not load the module.
const luaMissing = `unknown directive "lua_shared_dict"`

// withoutLuaModule says whether nginx lacks the Lua module that live
// upstreams need: nginx -t of the main config with the services file
// replaced by one live-mode directive. Any other outcome (nginx -t failing
// for another reason included) leaves the answer to the first render.
func probeWithoutLua(c *reload.Controller, n config.Nginx) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	probe := render.File{Path: n.ServicesConf, Data: []byte("lua_shared_dict lbctl_probe 64k;\n"), Perms: 0o644, Source: "builtin"}
	var ve *reload.ValidationError
	err := c.Validate(ctx, []render.File{probe})
	return errors.As(err, &ve) && strings.Contains(ve.Output, luaMissing)
}

// withoutLuaModule says, when live upstreams are configured, whether nginx
// lacks the Lua module, and logs that lbctl falls back to a reload per change.
func (l *LB) withoutLuaModule() bool {
	if !probeWithoutLua(l.reload, l.cfg.Nginx) {
		return false
	}
	l.log.Warn("nginx has no Lua module (Debian: libnginx-mod-http-lua, loaded by "+l.cfg.Nginx.Config+
		"): live upstreams are off, every instance change reloads nginx", "key", "nginx.live_upstreams")
	return true
}

// livePusher is the client of nginx's push socket, nil when live upstreams are off.
func livePusher(n config.Nginx) reload.LivePusher {
	if !n.LiveUpstreams {
		return nil
	}
	return live.NewClient(n.LiveSocket())
}

// Live reports whether instance changes reach nginx as live upstreams
// (nginx.live_upstreams, and nginx has the Lua module).
func (l *LB) Live() bool { return l.live }

// makeLiveDir creates nginx.live_dir with mode 0700, so that only lbctl's
// user reaches the push socket and reads the seed file.
func makeLiveDir(n config.Nginx) error {
	if err := os.MkdirAll(n.LiveDir, 0o700); err != nil {
		return fmt.Errorf("nginx.live_dir: %w", err)
	}
	if err := os.Chmod(n.LiveDir, 0o700); err != nil {
		return fmt.Errorf("nginx.live_dir: %w", err)
	}
	return nil
}

// resyncOnNginxRestart pushes the live upstreams again whenever the
// supervisor's nginx runs with a new master: one started after a crash
// loaded the seed file, and this confirms it holds the current set.
func (l *LB) resyncOnNginxRestart(ctx context.Context) error {
	sup, name := l.opts.Supervisor, l.cfg.Nginx.Program
	last := sup.PID(name)
	for {
		changed := sup.Changes()
		if st, err := sup.StatusOf(name); err == nil && st.State == supervisor.Running && st.PID != last && st.PID > 0 {
			last = st.PID
			if _, err := l.reload.Resync(ctx); err != nil {
				l.log.Warn("live upstreams not pushed to the restarted nginx", "err", err)
			}
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil
		}
	}
}

// ensureLiveDir makes nginx.live_dir once, in live mode, before anything is
// written to it.
func (l *LB) ensureLiveDir() error {
	if !l.live {
		return nil
	}
	l.liveDirOnce.Do(func() { l.liveDirErr = makeLiveDir(l.cfg.Nginx) })
	return l.liveDirErr
}
