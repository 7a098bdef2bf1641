package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/spf13/cobra"

	"github.com/lbctl/lbctl/reload"
	"github.com/lbctl/lbctl/render"
)

type renderOptions struct {
	*globalOptions
	dryRun  bool
	once    bool
	timeout time.Duration
	stdout  io.Writer
}

func newRenderCmd(g *globalOptions) *cobra.Command {
	o := &renderOptions{globalOptions: g}
	cmd := &cobra.Command{
		Use:   "render",
		Short: "Render nginx config from Consul (--dry-run prints, --once writes once, neither keeps watching)",
		Long: `Render every configured destination from Consul's health data.

  --dry-run  print what would be written, one header line per destination; write nothing
  --once     render once, write the files whose bytes changed, exit
  (neither)  keep watching Consul and rewrite on every change`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.stdout = cmd.OutOrStdout()
			return runRender(cmd.Context(), o)
		},
	}
	cmd.Flags().BoolVar(&o.dryRun, "dry-run", false, "print what would be written; write and signal nothing")
	cmd.Flags().BoolVar(&o.once, "once", false, "render once, write changed files, exit")
	cmd.Flags().DurationVar(&o.timeout, "timeout", 10*time.Second, "with --once or --dry-run: how long to keep trying Consul")
	return cmd
}

func runRender(ctx context.Context, o *renderOptions) error {
	if o.timeout <= 0 {
		return usageErrorf("--timeout must be positive, got %s", o.timeout)
	}
	log, err := o.logger()
	if err != nil {
		return err
	}
	cfg, err := o.loadConfig()
	if err != nil {
		return err
	}
	engine, _, err := renderEngine(cfg, log)
	if err != nil {
		return err
	}
	// nginx runs elsewhere: nginx.pid_file finds its master (or nothing is
	// signalled, and files are only validated and written).
	ctl := reload.New(reload.Options{Nginx: cfg.Nginx, Wait: cfg.Wait, Log: log})
	if !o.dryRun && !o.once {
		return watchAndApply(ctx, engine, ctl)
	}
	octx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	u, err := engine.Once(octx)
	if err != nil {
		return fmt.Errorf("render: %w", err)
	}
	if o.dryRun {
		return printUpdate(o.stdout, u)
	}
	return applyOnce(ctx, ctl, u, log)
}

// printUpdate writes each destination's header line and exact bytes.
func printUpdate(w io.Writer, u render.Update) error {
	for _, f := range u.Files {
		if _, err := fmt.Fprintf(w, "==> %s (%s) <==\n%s", f.Path, f.Source, f.Data); err != nil {
			return err
		}
	}
	return nil
}

// applyOnce validates the render with nginx -t, writes the files whose bytes
// changed and, when an nginx master is known, reloads it and confirms.
func applyOnce(ctx context.Context, ctl *reload.Controller, u render.Update, log *slog.Logger) error {
	res, err := ctl.Apply(ctx, u)
	if err != nil && !errors.Is(err, reload.ErrNoMaster) {
		return fmt.Errorf("render: %w", err)
	}
	log.Info("rendered", "outcome", res.Outcome, "changed", res.Changed)
	return nil
}

// watchAndApply renders on every Consul change and hands each render to the
// reload controller (coalesce, validate, swap, signal, confirm) until ctx ends.
func watchAndApply(ctx context.Context, engine *render.Engine, ctl *reload.Controller) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	updates := make(chan render.Update, 1)
	errc := make(chan error, 2)
	go func() { errc <- engine.Run(ctx, updates) }()
	go func() { errc <- ctl.Run(ctx, updates) }()
	err := <-errc
	cancel()
	if err2 := <-errc; err == nil {
		err = err2
	}
	return err
}
