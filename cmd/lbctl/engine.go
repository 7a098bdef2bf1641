package main

import (
	"log/slog"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/lbctl/lbctl/catalog"
	"github.com/lbctl/lbctl/config"
	"github.com/lbctl/lbctl/internal/consulclient"
	"github.com/lbctl/lbctl/render"
	"github.com/lbctl/lbctl/render/consultemplate"
	"github.com/lbctl/lbctl/shift"
)

// renderEngine builds the render engine for cfg: a Consul watch for the
// built-in services and consul-template for the templates.
func renderEngine(cfg *config.Config, log *slog.Logger) (*render.Engine, *api.Client, error) {
	client, err := consulclient.New(cfg.Consul)
	if err != nil {
		return nil, nil, err
	}
	watcher := catalog.NewWatcher(client, render.Queries(cfg.Services), log)
	var tmpl render.Templates
	if len(cfg.Templates) > 0 {
		ct, err := consultemplate.New(cfg.Templates, cfg.Consul, log)
		if err != nil {
			return nil, nil, err
		}
		tmpl = ct
	}
	engine := render.NewEngine(cfg, watcher, tmpl, render.SystemResolver(time.Second), log)
	engine.FollowSplits(shift.NewWatcher(client, log))
	return engine, client, nil
}
