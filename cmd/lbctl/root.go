package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/lbctl/lbctl/config"
)

// globalOptions are the flags every command shares.
type globalOptions struct {
	configPath string
	logLevel   string
	logFormat  string
	consul     config.Consul // --consul-* overrides
	// stdout and stderr are the running command's streams
	// (cmd.OutOrStdout, cmd.ErrOrStderr), set before it runs; every command
	// writes through them. nil (options built by hand in tests) discards.
	stdout, stderr io.Writer
}

func newRootCmd() *cobra.Command {
	g := &globalOptions{}
	root := &cobra.Command{
		Use:           "lbctl",
		Short:         "Run gRPC services behind nginx with Consul, with deploys that drop nothing",
		Long:          "Run gRPC services behind nginx with Consul, with deploys that drop nothing.\n\n" + exitCodeHelp(),
		SilenceUsage:  true,
		SilenceErrors: true,
		// Runnable, so that an unknown command reaches Args (a usage error)
		// instead of cobra's own plain error.
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return nil
			}
			msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
			if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
				msg += fmt.Sprintf(" (did you mean %s?)", strings.Join(s, ", "))
			}
			return errors.New(msg)
		},
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	root.PersistentPreRun = func(cmd *cobra.Command, args []string) {
		g.stdout, g.stderr = cmd.OutOrStdout(), cmd.ErrOrStderr()
	}
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return usageErrorf("%v (see lbctl %s --help)", err, cmd.Name())
	})
	f := root.PersistentFlags()
	f.StringVarP(&g.configPath, "config", "c", "lbctl.yaml", "config file")
	f.StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	f.StringVar(&g.logFormat, "log-format", "text", "log format: text or json")
	f.StringVar(&g.consul.Address, "consul-addr", "", "Consul agent HTTP address (overrides CONSUL_HTTP_ADDR and the config)")
	f.StringVar(&g.consul.TokenFile, "consul-token-file", "", "file holding the Consul ACL token (overrides CONSUL_HTTP_TOKEN_FILE)")
	f.StringVar(&g.consul.Datacenter, "consul-datacenter", "", "Consul datacenter to query")
	root.AddCommand(
		newRenderCmd(g),
		newValidateCmd(g),
		newRunCmd(g),
		newStatusCmd(g),
		newCtlCmd(g),
		newRegisterCmd(g),
		newMaintCmd(g),
		newDeregisterCmd(g),
		newShiftCmd(g),
	)
	argsAreUsage(root)
	return root
}

// argsAreUsage makes every command's argument errors usage errors (exit 2):
// cobra's own validators (cobra.ExactArgs, ...) return plain errors.
func argsAreUsage(cmd *cobra.Command) {
	if validate := cmd.Args; validate != nil {
		cmd.Args = func(cmd *cobra.Command, args []string) error {
			err := validate(cmd, args)
			if err == nil || exitCode(err) == exitUsage {
				return err
			}
			return usageErrorf("%v (see %s --help)", err, cmd.CommandPath())
		}
	}
	for _, sub := range cmd.Commands() {
		argsAreUsage(sub)
	}
}

// loadConfig reads the config the way every command does: environment, then
// file, then flags.
func (g *globalOptions) loadConfig() (*config.Config, error) {
	cfg, err := config.Load(g.configPath, config.Options{Env: os.LookupEnv, ConsulFlags: g.consul})
	return cfg, configError(err)
}

// out and errOut are the command's streams (io.Discard when unset).
func (g *globalOptions) out() io.Writer    { return orDiscard(g.stdout) }
func (g *globalOptions) errOut() io.Writer { return orDiscard(g.stderr) }

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

// logger builds the process logger from the log flags; logs go to the
// command's stderr.
func (g *globalOptions) logger() (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(g.logLevel)); err != nil {
		return nil, usageErrorf("--log-level: %v", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch g.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(g.errOut(), opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(g.errOut(), opts)), nil
	}
	return nil, usageErrorf("--log-format: want text or json, got %q", g.logFormat)
}
