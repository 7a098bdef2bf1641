package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/lbctl/lbctl/live"
)

type upstreamsOptions struct {
	*globalOptions
	socket  string
	json    bool
	timeout time.Duration
	stdout  io.Writer
}

func newStatusUpstreamsCmd(g *globalOptions) *cobra.Command {
	o := &upstreamsOptions{globalOptions: g}
	cmd := &cobra.Command{
		Use:   "upstreams",
		Short: "Show the instances and weights nginx holds for each live upstream, read back from nginx",
		Long: `With live upstreams (nginx.live_upstreams), lbctl pushes each upstream's
instances into nginx's shared memory. This reads them back from nginx through
the push socket (--socket, or nginx.live_dir's live.sock from the config):
what every nginx worker balances over now, not what lbctl meant to send.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.stdout = cmd.OutOrStdout()
			return runStatusUpstreams(cmd.Context(), o)
		},
	}
	cmd.Flags().StringVar(&o.socket, "socket", "", "nginx's live upstreams socket (default: from the config)")
	cmd.Flags().BoolVar(&o.json, "json", false, "print JSON")
	cmd.Flags().DurationVar(&o.timeout, "timeout", 10*time.Second, "give up after this long")
	return cmd
}

func runStatusUpstreams(ctx context.Context, o *upstreamsOptions) error {
	socket := o.socket
	if socket == "" {
		cfg, err := o.loadConfig()
		if err != nil {
			return fmt.Errorf("find the live upstreams socket (or pass --socket): %w", err)
		}
		socket = cfg.Nginx.LiveSocket()
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	set, err := live.NewClient(socket).Read(ctx)
	if err != nil {
		return fmt.Errorf("read live upstreams from nginx (unix:%s): %w", socket, err)
	}
	if o.json {
		return printJSON(o.stdout, set)
	}
	return printUpstreams(o.stdout, set)
}

// printUpstreams writes one line per instance, grouped by upstream.
func printUpstreams(w io.Writer, set live.Set) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "UPSTREAM\tVERSION\tINSTANCE\tWEIGHT\tSERVICE ID")
	for _, name := range slices.Sorted(maps.Keys(set)) {
		up := set[name]
		if len(up.Peers) == 0 {
			fmt.Fprintf(tw, "%s\t%s\t(none: calls answered UNAVAILABLE)\t-\t-\n", name, up.Version)
		}
		for _, p := range up.Peers {
			id := p.ID
			if id == "" {
				id = "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", name, up.Version, net.JoinHostPort(p.Host, strconv.Itoa(p.Port)), p.Weight, id)
		}
	}
	return tw.Flush()
}
