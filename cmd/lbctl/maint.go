package main

import (
	"context"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/lbctl/lbctl/registrar"
)

// agentCmdOptions are the flags of maint and deregister, which act on one
// instance through the local agent.
type agentCmdOptions struct {
	g         *globalOptions
	serviceID string
	reason    string
	// changed reports whether the user set a flag; env is os.LookupEnv; out gets the result line.
	changed func(string) bool
	env     func(string) (string, bool)
	out     io.Writer
}

func newMaintCmd(g *globalOptions) *cobra.Command {
	o := &agentCmdOptions{g: g, env: os.LookupEnv}
	cmd := &cobra.Command{
		Use:   "maint --service-id ID on|off",
		Short: "Put a service instance into or out of maintenance",
		Long: `Put a service instance into maintenance (it stays registered but critical, so
load balancers stop sending it calls) or take it out, through the local agent.
This does not wait for the load balancers; lbctl register's drain does.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.changed, o.out = cmd.Flags().Changed, cmd.OutOrStdout()
			return runMaint(cmd.Context(), o, args[0])
		},
	}
	cmd.Flags().StringVar(&o.serviceID, "service-id", "", "instance ID (required)")
	cmd.Flags().StringVar(&o.reason, "reason", "lbctl maint", "reason shown in Consul")
	return cmd
}

// runMaint is `lbctl maint`: state is "on" or "off".
func runMaint(ctx context.Context, o *agentCmdOptions, state string) error {
	if state != "on" && state != "off" {
		return usageErrorf("maint: want on or off, got %q", state)
	}
	client, err := o.agentClient()
	if err != nil {
		return err
	}
	if err := registrar.SetMaintenance(ctx, client, o.serviceID, state == "on", o.reason); err != nil {
		return err
	}
	_, err = io.WriteString(o.out, "maintenance "+state+": "+o.serviceID+"\n")
	return err
}
