package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// newMaintCmd is a placeholder until its part lands.
func newMaintCmd(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "maint",
		Short: "Put a service instance into or out of maintenance",
		RunE: func(cmd *cobra.Command, args []string) error {
			return errors.New("maint: not implemented yet")
		},
	}
}
