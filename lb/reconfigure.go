package lb

import (
	"context"
	"fmt"
	"reflect"

	"github.com/lbctl/lbctl/config"
	"github.com/lbctl/lbctl/render"
)

// Reconfigure applies what SIGHUP can change in a running load balancer:
// new services and templates are rendered, validated with nginx -t and
// reloaded, as any Consul change is. It returns the keys that changed but
// take effect only after a restart (consul, nginx, wait, http, control,
// register, lb_id, services[].access_log). programs are the supervisor's.
// The socket lbctl holds for a removed service is closed (sockets.go). An
// engine that cannot be built (a template that does not parse) is an
// error, and nothing changes.
func (l *LB) Reconfigure(cfg *config.Config) (needsRestart []string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	needsRestart = restartKeys(l.cfg, cfg)
	if reflect.DeepEqual(l.rendered.Services, cfg.Services) && reflect.DeepEqual(l.rendered.Templates, cfg.Templates) {
		return needsRestart, nil
	}
	next := *l.rendered
	next.Services, next.Templates = cfg.Services, cfg.Templates
	engine, err := l.newEngine(&next)
	if err != nil {
		return needsRestart, fmt.Errorf("services and templates not applied: %w", err)
	}
	l.rendered, l.engine = &next, engine
	l.releaseRemovedSockets(&next)
	select { // newest wins: an engine Run has not started yet is replaced
	case <-l.newEngines:
	default:
	}
	l.newEngines <- engine
	return needsRestart, nil
}

// restartKeys are the keys that differ between old and cfg and that a
// running load balancer does not apply.
func restartKeys(old, cfg *config.Config) []string {
	var keys []string
	for _, k := range []struct {
		key      string
		old, new any
	}{
		{"consul", old.Consul, cfg.Consul},
		{"nginx", old.Nginx, cfg.Nginx},
		{"lb_id", old.LBID, cfg.LBID},
		{"wait", old.Wait, cfg.Wait},
		{"http", old.HTTP, cfg.HTTP},
		{"control", old.Control, cfg.Control},
		{"register", old.Register, cfg.Register},
		{"services[].access_log", accessLogs(old), accessLogs(cfg)},
	} {
		if !reflect.DeepEqual(k.old, k.new) {
			keys = append(keys, k.key)
		}
	}
	return keys
}

// accessLogs are the services' access logs, whose statistics the collector
// started with Run reads.
func accessLogs(cfg *config.Config) map[string]string {
	out := map[string]string{}
	for _, s := range cfg.Services {
		if s.AccessLog != "" {
			out[s.Name+"|"+s.Tag] = s.AccessLog
		}
	}
	return out
}

// currentEngine is the engine for the newest config.
func (l *LB) currentEngine() *render.Engine {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.engine
}

// runEngines runs the render engine into updates until ctx ends, switching
// to the engine Reconfigure built whenever there is one: the old engine's
// watches stop, the new one renders everything at once, and the reload
// controller applies that like any other update.
func (l *LB) runEngines(ctx context.Context, updates chan render.Update) error {
	engine := l.currentEngine()
	select { // an engine Reconfigure built before Run started is the current one
	case <-l.newEngines:
	default:
	}
	for {
		ectx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- engine.Run(ectx, updates) }()
		select {
		case <-ctx.Done():
			cancel()
			<-done
			return nil
		case engine = <-l.newEngines:
			cancel()
			<-done
			l.log.Info("services and templates reconfigured")
		case err := <-done:
			cancel()
			return err
		}
	}
}
