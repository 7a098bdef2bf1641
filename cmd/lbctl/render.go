package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/lbctl/lbctl/lb"
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
	// nginx runs elsewhere: nginx.pid_file finds its master (or nothing is
	// signalled, and files are only validated and written).
	l, err := lb.New(cfg, lb.Options{Log: log, RenderOnly: true})
	if err != nil {
		return configError(err)
	}
	if !o.dryRun && !o.once {
		return l.Run(ctx)
	}
	octx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	u, err := l.Once(octx)
	if err != nil {
		return fmt.Errorf("render: %w", err)
	}
	if o.dryRun {
		return printUpdate(o.stdout, u, cfg.Nginx.LiveSocket())
	}
	res, err := l.Apply(ctx, u)
	if err != nil && !errors.Is(err, reload.ErrNoMaster) {
		return fmt.Errorf("render: %w", err)
	}
	log.Info("rendered", "outcome", res.Outcome, "changed", res.Changed)
	return nil
}

// printUpdate writes each destination's header line and exact bytes, then
// in live mode the upstreams that would be pushed to socket, as JSON.
func printUpdate(w io.Writer, u render.Update, socket string) error {
	for _, f := range u.Files {
		if _, err := fmt.Fprintf(w, "==> %s (%s) <==\n%s", f.Path, f.Source, f.Data); err != nil {
			return err
		}
	}
	if u.Live == nil {
		return nil
	}
	data, err := json.MarshalIndent(u.Live, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "==> live upstreams, pushed to unix:%s (no reload) <==\n%s\n", socket, data)
	return err
}
