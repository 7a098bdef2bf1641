package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/lbctl/lbctl/internal/consulclient"
	"github.com/lbctl/lbctl/shift"
	"github.com/lbctl/lbctl/supervisor/control"
)

type statusOptions struct {
	*globalOptions
	socket  string
	json    bool
	timeout time.Duration
	stdout  io.Writer
}

func newStatusCmd(g *globalOptions) *cobra.Command {
	o := &statusOptions{globalOptions: g}
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the state of the programs a running lbctl supervises",
		Long: `Status asks a running lbctl, through its control socket, for the state of
every program: name, state (supervisord's), pid, uptime, restarts and how
it last exited. The socket is --socket, or control.socket from the config.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.stdout = cmd.OutOrStdout()
			return runStatus(cmd.Context(), o)
		},
	}
	cmd.Flags().StringVar(&o.socket, "socket", "", "control socket (default: control.socket from the config)")
	cmd.Flags().BoolVar(&o.json, "json", false, "print JSON")
	cmd.Flags().DurationVar(&o.timeout, "timeout", 10*time.Second, "give up after this long")
	cmd.AddCommand(newStatusUpstreamsCmd(g))
	return cmd
}

// controlSocket is --socket, else the config's control.socket.
func (g *globalOptions) controlSocket(flag string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	cfg, err := g.loadConfig()
	if err != nil {
		return "", fmt.Errorf("find the control socket (or pass --socket): %w", err)
	}
	return cfg.Control.Socket, nil
}

func runStatus(ctx context.Context, o *statusOptions) error {
	socket, err := o.controlSocket(o.socket)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	reply, err := control.NewClient(socket).Status(ctx)
	if err != nil {
		return err
	}
	if o.json {
		return printJSON(o.stdout, reply)
	}
	if err := printStatus(o.stdout, reply); err != nil {
		return err
	}
	printVersions(ctx, o.globalOptions, o.stdout)
	return nil
}

// printJSON writes v as indented JSON, for the status commands' --json.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printVersions adds, for each service that follows lbctl shift, its split
// and which version each instance runs (seed 003's bookkeeping), as
// lbctl shift status prints them. Without a config or Consul it says so and
// leaves the program table as the answer.
func printVersions(ctx context.Context, g *globalOptions, w io.Writer) {
	cfg, err := g.loadConfig()
	if err != nil {
		return
	}
	var services []string
	for _, s := range cfg.Services {
		if s.Shift && !slices.Contains(services, s.Name) {
			services = append(services, s.Name)
		}
	}
	if len(services) == 0 {
		return
	}
	client, err := consulclient.New(cfg.Consul)
	for _, name := range services {
		fmt.Fprintln(w)
		var st shift.Status
		if err == nil {
			st, err = shift.ReadStatus(ctx, client, name)
		}
		if err != nil {
			fmt.Fprintf(w, "%s: versions unknown: %v\n", name, err)
			continue
		}
		printShiftStatus(w, st)
	}
}

// printStatus writes a table like supervisorctl status.
func printStatus(w io.Writer, reply *control.StatusReply) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATE\tPID\tUPTIME\tRESTARTS\tLAST EXIT\tNOTE")
	for _, s := range reply.Programs {
		pid, uptime := "-", "-"
		if s.PID != 0 {
			pid = strconv.Itoa(s.PID)
			uptime = formatUptime(s.Uptime(reply.Now))
		}
		last := "-"
		if s.LastExit != nil {
			last = s.LastExit.String()
		}
		note := s.Note
		if note == "" {
			note = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", s.Name, s.State, pid, uptime, s.Restarts, last, note)
	}
	return tw.Flush()
}

// formatUptime is supervisorctl's H:MM:SS, with days in front when there are any.
func formatUptime(d time.Duration) string {
	d = d.Truncate(time.Second)
	days := d / (24 * time.Hour)
	d -= days * 24 * time.Hour
	s := fmt.Sprintf("%d:%02d:%02d", int(d.Hours()), int(d.Minutes())%60, int(d.Seconds())%60)
	if days > 0 {
		s = fmt.Sprintf("%d days, %s", days, s)
	}
	return s
}
