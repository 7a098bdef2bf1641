package main

import (
	"context"
	"io"
	"os"

	"github.com/hashicorp/consul/api"
	"github.com/spf13/cobra"

	"github.com/lbctl/lbctl/internal/consulclient"
	"github.com/lbctl/lbctl/registrar"
)

func newDeregisterCmd(g *globalOptions) *cobra.Command {
	o := &agentCmdOptions{g: g, env: os.LookupEnv}
	cmd := &cobra.Command{
		Use:   "deregister --service-id ID",
		Short: "Remove a service instance from Consul",
		Long: `Remove a service instance from the local agent, and so from Consul, at once.
This does not drain: load balancers learn of it as fast as they can.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.changed, o.out = cmd.Flags().Changed, cmd.OutOrStdout()
			return runDeregister(cmd.Context(), o)
		},
	}
	cmd.Flags().StringVar(&o.serviceID, "service-id", "", "instance ID (required)")
	return cmd
}

// runDeregister is `lbctl deregister`.
func runDeregister(ctx context.Context, o *agentCmdOptions) error {
	client, err := o.agentClient()
	if err != nil {
		return err
	}
	if err := registrar.Deregister(ctx, client, o.serviceID); err != nil {
		return err
	}
	_, err = io.WriteString(o.out, "deregistered: "+o.serviceID+"\n")
	return err
}

// agentClient checks --service-id and builds the Consul client from the
// config file (if any), the environment and the flags.
func (o *agentCmdOptions) agentClient() (*api.Client, error) {
	if o.serviceID == "" {
		return nil, usageErrorf("--service-id is required")
	}
	cfg, err := agentConfig(o.g, o.changed("config"), o.env)
	if err != nil {
		return nil, err
	}
	return consulclient.New(cfg.Consul)
}
