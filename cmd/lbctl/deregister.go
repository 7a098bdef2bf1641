package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// newDeregisterCmd is a placeholder until its part lands.
func newDeregisterCmd(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "deregister",
		Short: "Remove a service instance from Consul",
		RunE: func(cmd *cobra.Command, args []string) error {
			return errors.New("deregister: not implemented yet")
		},
	}
}
