package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// newRegisterCmd is a placeholder until its part lands.
func newRegisterCmd(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "register",
		Short: "Register a service with the local Consul agent, optionally running it",
		RunE: func(cmd *cobra.Command, args []string) error {
			return errors.New("register: not implemented yet")
		},
	}
}
