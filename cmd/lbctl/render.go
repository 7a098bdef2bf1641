package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// newRenderCmd is a placeholder until its part lands.
func newRenderCmd(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "render",
		Short: "Render nginx config from Consul (--dry-run prints, --once writes once)",
		RunE: func(cmd *cobra.Command, args []string) error {
			return errors.New("render: not implemented yet")
		},
	}
}
