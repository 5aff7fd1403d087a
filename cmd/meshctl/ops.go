package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshrpc/mesh/client"
	"github.com/meshrpc/mesh/internal/dashboard"
	"github.com/meshrpc/mesh/internal/relay"
)

// opsOpts are the flags of stat, top and tap.
type opsOpts struct {
	rng, scope string
	once       bool
	every      time.Duration
	top        int
	filter     dashboard.TailFilter
	count      int
	forTime    time.Duration
}

// opsCommands are stat, top and tap: the mesh's golden figures and its
// calls, from meshd's own data (meshd::stat, ::top, ::tail).
func opsCommands(o *opts, stdout, stderr io.Writer) []*cobra.Command {
	var oo opsOpts
	stat := &cobra.Command{
		Use:   "stat [SERVICE]",
		Short: "golden figures per service, or one service's callers, callees and methods",
		Long: "stat shows each service's calls per second, success rate (ok or app_error over all calls) and p50/p99, over\n" +
			"--range, for the whole mesh (every meshd asked over the host boundary) or --scope local; with SERVICE, its\n" +
			"callers, callees and methods. On a terminal it refreshes in place until Ctrl-C; otherwise (or with --once) it\n" +
			"prints once; -o json prints meshd's answer.\n\n" + exitHelp,
		Example: "  meshctl stat\n  meshctl stat payments --range 15m\n  meshctl stat -o json",
		Args:    argsBetween(0, 1),
		RunE: func(c *cobra.Command, args []string) error {
			q := map[string]any{"range": oo.rng, "scope": oo.scope}
			if len(args) == 1 {
				q["service"] = args[0]
			}
			return exitOrNil(refreshing(o, &oo, stdout, stderr, "stat", q, func(raw json.RawMessage, w io.Writer) error {
				if len(args) == 1 {
					var v dashboard.ServiceView
					if err := json.Unmarshal(raw, &v); err != nil {
						return err
					}
					printService(v, w)
					return nil
				}
				var v dashboard.ServicesView
				if err := json.Unmarshal(raw, &v); err != nil {
					return err
				}
				printServices(v, w)
				return nil
			}))
		},
	}
	top := &cobra.Command{
		Use:   "top",
		Short: "the busiest caller → service → method edges, live",
		Long: "top lists the busiest edges (caller → service::method) with their calls per second, success rate and p99,\n" +
			"over --range (at most 5m), refreshed in place on a terminal until Ctrl-C; -o json prints meshd's answer.\n\n" + exitHelp,
		Example: "  meshctl top\n  meshctl top -n 50 --scope local",
		Args:    argsBetween(0, 0),
		RunE: func(c *cobra.Command, args []string) error {
			q := map[string]any{"range": oo.rng, "scope": oo.scope}
			return exitOrNil(refreshing(o, &oo, stdout, stderr, "top", q, func(raw json.RawMessage, w io.Writer) error {
				var v dashboard.EdgesView
				if err := json.Unmarshal(raw, &v); err != nil {
					return err
				}
				printEdges(v, oo.top, w)
				return nil
			}))
		},
	}
	tap := &cobra.Command{
		Use:   "tap",
		Short: "a live stream of the calls through this meshd, with their result, latency and routing decision",
		Long: "tap prints the calls this meshd routes as they end (those its apps make, and refusals), narrowed by the\n" +
			"filters; --failed keeps calls not answered, --slow-ms those at least that slow (both: either). It runs until\n" +
			"Ctrl-C, --count calls or --for; -o json prints one JSON object a line.\n\n" + exitHelp,
		Example: "  meshctl tap --service payments --failed\n  meshctl tap --slow-ms 100 -o json --count 10",
		Args:    argsBetween(0, 0),
		RunE: func(c *cobra.Command, args []string) error {
			return exitOrNil(tapCmd(o, &oo, stdout, stderr))
		},
	}
	for _, c := range []*cobra.Command{stat, top} {
		f := c.Flags()
		f.StringVar(&oo.rng, "range", "5m", "the span the figures cover: 1m, 5m, 15m or 1h")
		f.StringVar(&oo.scope, "scope", "mesh", "mesh (every meshd) or local (this meshd's calls)")
		f.BoolVar(&oo.once, "once", false, "print once, even on a terminal")
		f.DurationVar(&oo.every, "every", 2*time.Second, "how often to refresh on a terminal")
	}
	top.Flags().IntVarP(&oo.top, "lines", "n", 20, "edges to show")
	tf := tap.Flags()
	tf.StringVar(&oo.filter.Service, "service", "", "only calls to this service")
	tf.StringVar(&oo.filter.Caller, "caller", "", "only calls from this caller (its proven identity)")
	tf.StringVar(&oo.filter.Method, "method", "", "only calls of this method")
	tf.StringVar(&oo.filter.Outcome, "result", "", "only calls with this result (ok, app_error, timeout, refused_authorize, ...)")
	tf.BoolVar(&oo.filter.Failed, "failed", false, "only calls not answered (neither ok nor app_error)")
	tf.Float64Var(&oo.filter.SlowMs, "slow-ms", 0, "only calls that took at least this many milliseconds")
	tf.IntVar(&oo.count, "count", 0, "stop after this many calls (0: run on)")
	tf.DurationVar(&oo.forTime, "for", 0, "stop after this long (0: run on)")
	return []*cobra.Command{stat, top, tap}
}

// dialMeshd dials --via for a command that runs until interrupted: the
// context ends on Ctrl-C or SIGTERM.
func dialMeshd(o *opts, stderr io.Writer) (context.Context, func(), *client.Client, int) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	copts, err := o.clientOptions("meshctl")
	if err != nil {
		fmt.Fprintf(stderr, "meshctl: %v\n", err)
		stop()
		return nil, nil, nil, exitUsage
	}
	dctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	c, err := client.Dial(dctx, o.via, copts)
	if err != nil {
		fmt.Fprintf(stderr, "meshctl: cannot reach meshd at %s (--via): %v\n", o.via, err)
		stop()
		return nil, nil, nil, exitUnreachable
	}
	return ctx, func() { c.Close(); stop() }, c, exitOK
}

// refreshing asks meshd's method with q and prints the answer: once (with
// -o json, --once, or not on a terminal) or in place every --every.
func refreshing(o *opts, oo *opsOpts, stdout, stderr io.Writer, method string, q any, print func(json.RawMessage, io.Writer) error) int {
	if o.output != "" && o.output != "json" && o.output != "table" && o.output != "text" {
		fmt.Fprintf(stderr, "meshctl %s: -o %q: want json or table\n", method, o.output)
		return exitUsage
	}
	ctx, done, c, code := dialMeshd(o, stderr)
	if code != exitOK {
		return code
	}
	defer done()
	live := o.output != "json" && !oo.once && isTerminal(stdout)
	for {
		cctx, cancel := context.WithTimeout(ctx, o.timeout)
		var out json.RawMessage
		_, err := c.CallJSON(cctx, "meshd", method, nil, q, &out)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return exitOK // Ctrl-C
			}
			return fail(err, stdout, stderr)
		}
		if o.output == "json" {
			printJSON(out, stdout)
			return exitOK
		}
		var b strings.Builder
		if err := print(out, &b); err != nil {
			fmt.Fprintf(stderr, "meshctl %s: meshd's answer: %v\n", method, err)
			return exitCallFailed
		}
		if !live {
			io.WriteString(stdout, b.String())
			return exitOK
		}
		fmt.Fprintf(stdout, "\x1b[H\x1b[2J%s\n%s (every %v; Ctrl-C to stop)\n", b.String(), time.Now().Format("15:04:05"), oo.every)
		select {
		case <-ctx.Done():
			return exitOK
		case <-time.After(oo.every):
		}
	}
}

func pct(f float64, calls uint64) string {
	if calls == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f%%", 100*f)
}

func ms(v float64, calls uint64) string {
	if calls == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fms", v)
}

func meshdsLine(ms []dashboard.MeshdState, w io.Writer) {
	var down []string
	for _, m := range ms {
		if !m.OK {
			down = append(down, m.Meshd+" ("+m.Error+")")
		}
	}
	fmt.Fprintf(w, "%d of %d meshds answered", len(ms)-len(down), len(ms))
	if len(down) > 0 {
		fmt.Fprintf(w, "; not: %s", strings.Join(down, ", "))
	}
	fmt.Fprintln(w)
}

func printServices(v dashboard.ServicesView, w io.Writer) {
	meshdsLine(v.Meshds, w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "SERVICE\tCALLS/S\tSUCCESS\tP50\tP99\tCALLERS\tINSTANCES\n")
	for _, s := range v.Services {
		var insts []string
		for _, i := range s.Instances {
			st := i.Node
			if st == "" {
				st = i.Addr
			}
			if i.Breaker != "closed" {
				st += "(" + i.Breaker + ")"
			}
			insts = append(insts, st)
		}
		fmt.Fprintf(tw, "%s\t%.2f\t%s\t%s\t%s\t%d\t%s\n", s.Name, s.PerSecond, pct(s.Success, s.Calls), ms(s.P50, s.Calls), ms(s.P99, s.Calls), s.Callers, strings.Join(insts, " "))
	}
	tw.Flush()
}

func printService(v dashboard.ServiceView, w io.Writer) {
	meshdsLine(v.Meshds, w)
	fmt.Fprintf(w, "%s: %.2f calls/s, %s success, p50 %s, p99 %s (%d calls over %.0fs)\n",
		v.Name, v.PerSecond, pct(v.Success, v.Calls), ms(v.P50, v.Calls), ms(v.P99, v.Calls), v.Calls, v.Seconds)
	for _, part := range []struct {
		title string
		rows  []dashboard.EdgeRow
	}{{"CALLER", v.Callers}, {"CALLEE", v.Callees}, {"METHOD", v.Methods}} {
		fmt.Fprintln(w)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "%s\tCALLS/S\tSUCCESS\tP50\tP99\n", part.title)
		for _, r := range part.rows {
			fmt.Fprintf(tw, "%s\t%.2f\t%s\t%s\t%s\n", r.Name, r.PerSecond, pct(r.Success, r.Calls), ms(r.P50, r.Calls), ms(r.P99, r.Calls))
		}
		tw.Flush()
	}
}

func printEdges(v dashboard.EdgesView, n int, w io.Writer) {
	meshdsLine(v.Meshds, w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "CALLER\tSERVICE\tMETHOD\tCALLS/S\tSUCCESS\tP50\tP99\n")
	for i, e := range v.Edges {
		if n > 0 && i >= n {
			break
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.2f\t%s\t%s\t%s\n", e.Caller, e.Service, e.Method, e.PerSecond, pct(e.Success, e.Calls), ms(e.P50, e.Calls), ms(e.P99, e.Calls))
	}
	tw.Flush()
}

// tapCmd prints the calls meshd records, as they end, until Ctrl-C,
// --count or --for.
func tapCmd(o *opts, oo *opsOpts, stdout, stderr io.Writer) int {
	if o.output != "" && o.output != "json" && o.output != "table" && o.output != "text" {
		fmt.Fprintf(stderr, "meshctl tap: -o %q: want json or text\n", o.output)
		return exitUsage
	}
	ctx, done, c, code := dialMeshd(o, stderr)
	if code != exitOK {
		return code
	}
	defer done()
	if oo.forTime > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, oo.forTime)
		defer cancel()
	}
	ask := func(q any) (dashboard.TailAnswer, error) {
		cctx, cancel := context.WithTimeout(ctx, o.timeout)
		defer cancel()
		var a dashboard.TailAnswer
		_, err := c.CallJSON(cctx, "meshd", "tail", nil, q, &a)
		return a, err
	}
	a, err := ask(map[string]any{})
	if err != nil {
		return fail(err, stdout, stderr)
	}
	cursor, seen := a.Next, 0
	enc := json.NewEncoder(stdout)
	for {
		select {
		case <-ctx.Done():
			return exitOK
		case <-time.After(250 * time.Millisecond):
		}
		a, err := ask(map[string]any{"cursor": cursor, "filter": oo.filter})
		if err != nil {
			if ctx.Err() != nil {
				return exitOK
			}
			return fail(err, stdout, stderr)
		}
		cursor = a.Next
		if a.Missed > 0 {
			fmt.Fprintf(stderr, "meshctl tap: %d calls went by faster than tap reads them\n", a.Missed)
		}
		for _, e := range a.Calls {
			if o.output == "json" {
				enc.Encode(e)
			} else {
				printTap(e, stdout)
			}
			if seen++; oo.count > 0 && seen >= oo.count {
				return exitOK
			}
		}
	}
}

func printTap(e relay.Explanation, w io.Writer) {
	method := ""
	if e.Method != "" {
		method = "::" + e.Method
	}
	var why []string
	if e.Stage != "" {
		why = append(why, "refused at "+e.Stage+": "+e.Refused)
	}
	for _, a := range e.Attempts {
		why = append(why, fmt.Sprintf("%s: %s -> %s (%.2fms)", a.Instance, a.Why, a.Result, a.Millis))
	}
	outcome := e.Outcome
	if outcome == "" {
		outcome = e.Result
	}
	fmt.Fprintf(w, "%s  %s -> %s%s  %s  %.2fms  %s\n", e.At.Format("15:04:05.000"), e.Caller, e.Service, method, outcome, e.Millis, strings.Join(why, "; "))
}
