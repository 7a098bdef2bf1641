package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// newStatusCmd is a placeholder until its part lands.
func newStatusCmd(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the state of the programs a running lbctl supervises",
		RunE: func(cmd *cobra.Command, args []string) error {
			return errors.New("status: not implemented yet")
		},
	}
}
