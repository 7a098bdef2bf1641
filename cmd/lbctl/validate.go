package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/lbctl/lbctl/render/consultemplate"
)

type validateOptions struct {
	*globalOptions
	stdout io.Writer
}

func newValidateCmd(g *globalOptions) *cobra.Command {
	o := &validateOptions{globalOptions: g}
	return &cobra.Command{
		Use:   "validate",
		Short: "Check the config and parse every template, without Consul",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.stdout = cmd.OutOrStdout()
			return runValidate(o)
		},
	}
}

func runValidate(o *validateOptions) error {
	cfg, err := o.loadConfig()
	if err != nil {
		return err
	}
	if err := consultemplate.Check(cfg.Templates); err != nil {
		return configError(err)
	}
	_, err = fmt.Fprintf(o.stdout, "%s: ok (%d services, %d templates, %d programs)\n",
		o.configPath, len(cfg.Services), len(cfg.Templates), len(cfg.Programs))
	return err
}
