package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// newRunCmd is a placeholder until its part lands.
func newRunCmd(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "run",
		Short: "Run as the container entrypoint: supervise nginx, render, reload, register",
		RunE: func(cmd *cobra.Command, args []string) error {
			return errors.New("run: not implemented yet")
		},
	}
}
