package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// newCtlCmd is a placeholder until its part lands.
func newCtlCmd(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "ctl",
		Short: "Start, stop, restart or signal a program of a running lbctl",
		RunE: func(cmd *cobra.Command, args []string) error {
			return errors.New("ctl: not implemented yet")
		},
	}
}
