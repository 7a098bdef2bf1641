package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/lbctl/lbctl/supervisor/control"
)

type ctlOptions struct {
	*globalOptions
	socket  string
	timeout time.Duration
	stdout  io.Writer
}

func newCtlCmd(g *globalOptions) *cobra.Command {
	o := &ctlOptions{globalOptions: g}
	cmd := &cobra.Command{
		Use:   "ctl start|stop|restart|signal PROGRAM [SIGNAL]",
		Short: "Start, stop, restart or signal a program of a running lbctl",
		Long: `Ctl changes a program of a running lbctl through its control socket (the
only way to change anything in a running lbctl). start waits until the
program is RUNNING, stop until it has exited (its stopsignal, then SIGKILL
after stopwaitsecs), restart does both. signal sends SIGNAL (a name such as
HUP or USR1) to the program's main process.`,
		Example: `  lbctl ctl restart app
  lbctl ctl signal nginx USR1`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 2 {
				return usageErrorf("ctl: want ACTION PROGRAM [SIGNAL], got %d arguments", len(args))
			}
			switch want := 2; args[0] {
			case "signal":
				want = 3
				fallthrough
			case "start", "stop", "restart":
				if len(args) != want {
					return usageErrorf("ctl %s: want %d arguments after ctl, got %d", args[0], want, len(args))
				}
				return nil
			}
			return usageErrorf("ctl: unknown action %q (want start, stop, restart or signal)", args[0])
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			o.stdout = cmd.OutOrStdout()
			return runCtl(cmd.Context(), o, args)
		},
	}
	cmd.Flags().StringVar(&o.socket, "socket", "", "control socket (default: control.socket from the config)")
	cmd.Flags().DurationVar(&o.timeout, "timeout", 2*time.Minute, "give up waiting after this long")
	return cmd
}

func runCtl(ctx context.Context, o *ctlOptions, args []string) error {
	socket, err := o.controlSocket(o.socket)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	client := control.NewClient(socket)
	action, program := args[0], args[1]
	if action == "signal" {
		err = client.Signal(ctx, program, args[2])
	} else {
		err = client.Act(ctx, action, program)
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w", action, program, err)
	}
	_, err = fmt.Fprintf(o.stdout, "%s: %s ok%s\n", program, action, stateOf(ctx, client, program))
	return err
}

// stateOf is " (STATE, pid N)" for program, or "" when status fails.
func stateOf(ctx context.Context, client *control.Client, program string) string {
	reply, err := client.Status(ctx)
	if err != nil {
		return ""
	}
	for _, st := range reply.Programs {
		if st.Name != program {
			continue
		}
		switch {
		case st.PID != 0:
			return fmt.Sprintf(" (%s, pid %d)", st.State, st.PID)
		case st.Note != "":
			return fmt.Sprintf(" (%s, %s)", st.State, st.Note)
		}
		return fmt.Sprintf(" (%s)", st.State)
	}
	return ""
}
