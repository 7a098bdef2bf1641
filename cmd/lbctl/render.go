package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/spf13/cobra"

	"github.com/lbctl/lbctl/internal/atomicfile"
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
	if !o.dryRun && !o.once {
		return watchAndWrite(ctx, engine, log)
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	u, err := engine.Once(ctx)
	if err != nil {
		return fmt.Errorf("render: %w", err)
	}
	if o.dryRun {
		return printUpdate(o.stdout, u)
	}
	return writeUpdate(u, log)
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

// writeUpdate writes the files whose bytes changed.
func writeUpdate(u render.Update, log *slog.Logger) error {
	var errs []error
	for _, f := range u.Files {
		changed, err := atomicfile.Write(f.Path, f.Data, f.Perms)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s (from %s): %w", f.Path, f.Source, err))
			continue
		}
		log.Info("rendered", "path", f.Path, "source", f.Source, "changed", changed)
	}
	return errors.Join(errs...)
}

// watchAndWrite rewrites the destinations on every Consul change until ctx ends.
func watchAndWrite(ctx context.Context, engine *render.Engine, log *slog.Logger) error {
	updates := make(chan render.Update, 1)
	errc := make(chan error, 1)
	go func() { errc <- engine.Run(ctx, updates) }()
	for {
		select {
		case err := <-errc:
			return err
		case u := <-updates:
			if err := writeUpdate(u, log); err != nil {
				log.Error("write failed; will retry on the next change", "err", err)
			}
		}
	}
}
