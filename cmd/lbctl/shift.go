package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/spf13/cobra"

	"github.com/lbctl/lbctl/config"
	"github.com/lbctl/lbctl/internal/consulclient"
	"github.com/lbctl/lbctl/shift"
)

type shiftOptions struct {
	*globalOptions
	from, to     string
	steps        []int
	interval     time.Duration
	maxErrorRate float64
	minCalls     int64
	abort        bool
	stdout       io.Writer
	terminal     bool
	width        func() int // the terminal's columns, when terminal
}

func newShiftCmd(g *globalOptions) *cobra.Command {
	o := &shiftOptions{globalOptions: g}
	cmd := &cobra.Command{
		Use:   "shift SERVICE --to TAG [--from TAG] [--steps 10,50,100] [--interval 30s]",
		Short: "Move a service's traffic from one tag to another in health-gated steps, rolling back by itself",
		Long: `Move SERVICE's calls from the instances tagged --from to those tagged --to in
steps (percentages for --to). Each step's split is written to Consul KV
(lbctl/shift/SERVICE); every lbctl run renders it as nginx upstream weights for
services configured with shift: true. A step holds for --interval while two
gates are checked: every --to instance passes its Consul checks, and the calls
the load balancers logged to --to fail at most --max-error-rate. A failed gate
puts all traffic back on --from at once and exits 3. Ctrl-C stops between
steps and leaves the last step's split (exit 130). See docs/shift.md.

  lbctl shift greeter --from blue --to green --steps 10,50,100 --interval 30s
  lbctl shift status greeter
  lbctl shift --abort greeter

Exit codes (see lbctl --help): 0 done, 2 bad usage or steps, 3 rolled back,
4 another shift runs, 5 aborted by someone, 6 unknown service or unhealthy tag,
130 interrupted.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.stdout = cmd.OutOrStdout()
			o.terminal = isTerminal(o.stdout)
			if o.terminal {
				o.width = watchWidth(cmd.Context(), int(o.stdout.(*os.File).Fd()))
			}
			if o.abort {
				return runShiftAbort(cmd.Context(), o, args[0])
			}
			return runShift(cmd.Context(), o, args[0])
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.from, "from", "", "tag that has the traffic now (default: the service's tag in the config)")
	f.StringVar(&o.to, "to", "", "tag to move the traffic to (required)")
	f.IntSliceVar(&o.steps, "steps", []int{10, 50, 100}, "increasing percentages of calls for --to")
	f.DurationVar(&o.interval, "interval", 30*time.Second, "how long each step holds while its gates are checked")
	f.Float64Var(&o.maxErrorRate, "max-error-rate", 0.01, "highest share of failed calls to --to a step may see (0.01 = 1%)")
	f.Int64Var(&o.minCalls, "min-calls", 20, "calls to --to needed before the error-rate gate fails a step early")
	f.BoolVar(&o.abort, "abort", false, "put all traffic back on the shift's --from now; a running shift stops")
	cmd.AddCommand(newShiftStatusCmd(g))
	return cmd
}

func newShiftStatusCmd(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "status SERVICE",
		Short: "Show SERVICE's split, who is shifting it, each instance's version and the calls per version",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runShiftStatus(cmd.Context(), &shiftOptions{globalOptions: g, stdout: cmd.OutOrStdout()}, args[0])
		},
	}
}

func runShift(ctx context.Context, o *shiftOptions, service string) error {
	cfg, client, err := o.shiftConsul()
	if err != nil {
		return err
	}
	plan, err := o.plan(cfg, service)
	if err != nil {
		return err
	}
	if warning := followWarning(cfg, service); warning != "" {
		fmt.Fprintln(o.errOut(), "lbctl: warning:", warning)
	}
	p := &progress{w: o.stdout, terminal: o.terminal, steps: len(plan.Steps), width: o.width}
	final, err := shift.Shift(ctx, client, plan, shift.Options{
		MaxErrorRate: o.maxErrorRate, MinCalls: o.minCalls, OnEvent: p.event,
	})
	p.finish()
	if err != nil {
		return err
	}
	fmt.Fprintf(o.stdout, "done: %s serves %s\n", service, final)
	return nil
}

// plan turns the flags into a shift plan; --from defaults to the config's tag.
func (o *shiftOptions) plan(cfg *config.Config, service string) (shift.Plan, error) {
	from := o.from
	if from == "" {
		for _, s := range cfg.Services {
			if s.Name == service && s.Tag != "" {
				from = s.Tag
			}
		}
	}
	switch {
	case o.to == "":
		return shift.Plan{}, usageErrorf("--to is required: the tag to move %s's traffic to", service)
	case from == "":
		return shift.Plan{}, usageErrorf("--from is required: %s has no tag in %s to default to", service, o.configPath)
	case o.maxErrorRate < 0 || o.maxErrorRate > 1:
		return shift.Plan{}, usageErrorf("--max-error-rate must be 0-1 (0.01 is 1%%), got %g", o.maxErrorRate)
	}
	return shift.Plan{Service: service, From: from, To: o.to, Steps: o.steps, Interval: o.interval}, nil
}

// followWarning says when the local config would not follow the split.
func followWarning(cfg *config.Config, service string) string {
	if len(cfg.Services) == 0 {
		return ""
	}
	if slices.ContainsFunc(cfg.Services, func(s config.Service) bool { return s.Name == service && s.Shift }) {
		return ""
	}
	return fmt.Sprintf("%s has no service %s with shift: true; load balancers running this config will not follow the split", cfg.Path(), service)
}

func runShiftAbort(ctx context.Context, o *shiftOptions, service string) error {
	_, client, err := o.shiftConsul()
	if err != nil {
		return err
	}
	holder, _ := shift.CurrentHolder(ctx, client, service)
	me := shift.Me(shift.Plan{}, time.Now())
	split, err := shift.Abort(ctx, client, service, fmt.Sprintf("%s@%s", me.User, me.Host))
	if err != nil {
		return err
	}
	fmt.Fprintf(o.stdout, "aborted: %s serves %s\n", service, split)
	if holder != nil {
		fmt.Fprintf(o.stdout, "the running shift (%s) stops at its next check\n", holder)
	}
	return nil
}

func runShiftStatus(ctx context.Context, o *shiftOptions, service string) error {
	_, client, err := o.shiftConsul()
	if err != nil {
		return err
	}
	st, err := shift.ReadStatus(ctx, client, service)
	if err != nil {
		return err
	}
	printShiftStatus(o.stdout, st)
	return nil
}

// shiftConsul loads the config for its Consul settings; without a config
// file at the default path, the environment and flags alone say where Consul is.
func (o *shiftOptions) shiftConsul() (*config.Config, *api.Client, error) {
	cfg, err := o.loadConfig()
	if err != nil && errors.Is(err, fs.ErrNotExist) && o.configPath == "lbctl.yaml" {
		cfg, err = config.Parse("(no config)", nil, config.Options{Env: os.LookupEnv, ConsulFlags: o.consul})
	}
	if err != nil {
		return nil, nil, err
	}
	client, err := consulclient.New(cfg.Consul)
	if err != nil {
		return nil, nil, err
	}
	return cfg, client, nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0 && os.Getenv("TERM") != "dumb"
}

func printShiftStatus(w io.Writer, st shift.Status) {
	switch {
	case !st.Recorded:
		fmt.Fprintf(w, "%s: no shift recorded (%s)\n", st.Service, shift.SplitKey(st.Service))
	default:
		fmt.Fprintf(w, "%s: %s, updated %s\n", st.Service, st.Split, st.Split.UpdatedAt.Format(time.RFC3339))
		if st.Split.Reason != "" {
			fmt.Fprintf(w, "  why: %s\n", st.Split.Reason)
		}
	}
	if st.Holder != nil {
		fmt.Fprintf(w, "  running: %s\n", st.Holder)
	}
	if st.Stale() {
		fmt.Fprintf(w, "  the shift process is gone (crashed?): the split stays as above; run lbctl shift --abort %s to go back to %s\n", st.Service, st.Split.From)
	}
	fmt.Fprintf(w, "instances:\n")
	for _, in := range st.Instances {
		fmt.Fprintf(w, "  %-24s %s:%d  version %-8s tags %-16s %s\n", in.ID, in.Address, in.Port, orDash(in.Version), strings.Join(in.Tags, ","), in.Health)
	}
	fmt.Fprintf(w, "calls through %d load balancer(s), since each started:\n", st.LoadBalancers)
	for _, tag := range slices.Sorted(maps.Keys(st.CallsByTag)) {
		c := st.CallsByTag[tag]
		fmt.Fprintf(w, "  tag %-12s %8d calls  %6d errors (%.2f%%)\n", tag, c.Total(), c.Errors(), percent(c.Errors(), c.Total()))
	}
	for _, v := range slices.Sorted(maps.Keys(st.CallsByVersion)) {
		c := st.CallsByVersion[v]
		fmt.Fprintf(w, "  version %-8s %8d calls  %6d errors (%.2f%%)\n", v, c.Total(), c.Errors(), percent(c.Errors(), c.Total()))
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func percent(part, total int64) float64 {
	if total == 0 {
		return 0
	}
	return 100 * float64(part) / float64(total)
}
