package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshrpc/mesh/client"
	"github.com/meshrpc/mesh/internal/version"
)

// opts are every command's flags; each command reads the ones it has.
type opts struct {
	via      string
	timeout  time.Duration
	output   string
	zipkin   string
	encoding string
	// who meshctl proves it is (--as, with a token or meshd's Unix user rule)
	as, tokenFile string
	// call and bench
	json, raw          bool
	thrift             string // a Thrift IDL file
	proto              string // a .proto file
	grpc               bool   // bench: over gRPC, not TChannel
	headers            headerFlags
	shardKey, routeKey string
	caller             string
	explain, trace     bool
	traces             string
	calls, concurrency int
	connections        int
	duration, warmup   time.Duration
	rps                float64
}

// routing is the call options the routing flags ask for.
func (o *opts) routing() []client.CallOption {
	var co []client.CallOption
	if o.shardKey != "" {
		co = append(co, client.WithShardKey(o.shardKey))
	}
	if o.routeKey != "" {
		co = append(co, client.WithRoutingKey(o.routeKey))
	}
	if o.caller != "" {
		co = append(co, client.WithCaller(o.caller))
	}
	return co
}

type headerFlags map[string]string

func (h headerFlags) String() string { return fmt.Sprint(map[string]string(h)) }
func (h headerFlags) Type() string   { return "KEY=VALUE" }

// Set takes KEY=VALUE or, as curl, yab and grpcurl write it, "KEY: VALUE":
// whichever of = and : comes first separates the two.
func (h headerFlags) Set(v string) error {
	i := strings.IndexAny(v, "=:")
	k := strings.TrimSpace(v[:max(i, 0)])
	if i < 0 || k == "" {
		return fmt.Errorf("header %q: want KEY=VALUE or \"KEY: VALUE\"", v)
	}
	h[k] = strings.TrimSpace(v[i+1:])
	return nil
}

// timeoutFlag is --timeout: a duration (250ms, 1.5s) or bare milliseconds,
// at least 1ms, since a call's ttl is in whole milliseconds.
type timeoutFlag time.Duration

func (f *timeoutFlag) String() string { return time.Duration(*f).String() }
func (f *timeoutFlag) Type() string   { return "duration" }
func (f *timeoutFlag) Set(v string) error {
	d, err := time.ParseDuration(v)
	if ms, nerr := strconv.ParseFloat(v, 64); nerr == nil {
		d, err = time.Duration(ms*float64(time.Millisecond)), nil
	}
	if err != nil {
		return fmt.Errorf("%q: want a duration (250ms, 1.5s) or milliseconds (250)", v)
	}
	if d < time.Millisecond {
		return fmt.Errorf("%s: at least 1ms (a call's ttl is in whole milliseconds)", d)
	}
	*f = timeoutFlag(d)
	return nil
}

// exitCode is a command's outcome when it has already said why.
type exitCode int

func (e exitCode) Error() string { return "exit " + strconv.Itoa(int(e)) }

const exitHelp = `Exit status: 0 ok; 1 the call failed (an application or wire error, a bench call that failed, a service
with no healthy instances); 2 usage or bad input; 3 meshd unreachable.`

// newRoot builds meshctl's commands, writing to stdout and stderr, and the
// options their flags fill.
func newRoot(stdin io.Reader, stdout, stderr io.Writer) (*cobra.Command, *opts) {
	o := &opts{headers: headerFlags{}}
	via := client.LocalAddr()
	root := &cobra.Command{
		Use:           "meshctl",
		Short:         "meshctl talks to a mesh: call any service, load it, list services and instances, draw traces",
		Long:          "meshctl talks to a mesh through a meshd (--via, default $MESH_VIA, else its socket " + client.LocalSocket + " if there is one, else " + client.LocalTCP + ").\n\n" + exitHelp,
		Version:       version.String("meshctl"),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetVersionTemplate("{{.Version}}\n")
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	pf := root.PersistentFlags()
	pf.StringVar(&o.via, "via", via, "the meshd (or, for call and bench, any TChannel peer) to talk to: HOST:PORT or unix:PATH; env MESH_VIA")
	o.timeout = 5 * time.Second
	pf.Var((*timeoutFlag)(&o.timeout), "timeout", "deadline of each call: 250ms, 1.5s, or bare milliseconds")
	pf.StringVarP(&o.output, "output", "o", "", "output: json or table (services, instances, status; default json), text or json (bench; default text)")
	pf.StringVar(&o.zipkin, "zipkin", os.Getenv("MESH_ZIPKIN"), "send meshctl's own span to this Zipkin v2 URL too; env MESH_ZIPKIN")
	pf.StringVar(&o.encoding, "zipkin-encoding", os.Getenv("MESH_ZIPKIN_ENCODING"), "proto or json, as the backend takes; env MESH_ZIPKIN_ENCODING")
	pf.StringVar(&o.as, "as", os.Getenv("MESH_AS"), "prove this service `name` to meshd and call as it (a Consul token with service:write on it from CONSUL_HTTP_TOKEN or --token-file, or meshd's rule for its own Unix user); without it calls are anonymous; env MESH_AS")
	pf.StringVar(&o.tokenFile, "token-file", "", "`file` holding the Consul ACL token that proves --as (a token is never a flag: argv is public)")

	routingFlags := func(c *cobra.Command) {
		f := c.Flags()
		f.StringVar(&o.shardKey, "shard-key", "", "route by this shard key (affinity: the same key reaches the same instance)")
		f.StringVar(&o.shardKey, "sk", "", "short for --shard-key")
		f.StringVar(&o.routeKey, "routing-key", "", "route on this service's instances and policy (rk), calling the named service there")
		f.StringVar(&o.routeKey, "rk", "", "short for --routing-key")
		f.StringVar(&o.caller, "caller", "", "the caller name (cn) the calls carry; meshd goes by what the connection proved, not by this")
	}

	call := &cobra.Command{
		Use:   "call SERVICE METHOD [BODY|@FILE|-]",
		Short: "call a method (body from the argument, a file, or stdin)",
		Long: "call a method. The scheme is JSON when the body is JSON, else raw; --json or --raw decide.\n" +
			"Prints the answer on stdout, its headers, the latency and any trace id on stderr.\n\n" + exitHelp,
		Example: "  meshctl call kv get '{\"key\":\"a\"}'\n  meshctl call echo echo hello --raw\n" +
			"  meshctl call kv 'KV::get' --thrift kv.thrift '{\"key\": \"a\"}' -H 'x-request: 1'\n" +
			"  meshctl call kv 'kv.KV::Get' --proto kv.proto '{\"key\": \"a\"}'",
		Args: argsBetween(2, 3),
		RunE: func(c *cobra.Command, args []string) error {
			if n := btoi(o.json) + btoi(o.raw) + btoi(o.thrift != "") + btoi(o.proto != ""); n > 1 {
				return fmt.Errorf("--json, --raw, --thrift and --proto exclude each other")
			}
			return withClient(o, stderr, func(ctx context.Context, cl *client.Client) int {
				return callCmd(ctx, cl, *o, args, stdin, stdout, stderr)
			})
		},
	}
	cf := call.Flags()
	cf.BoolVar(&o.json, "json", false, "send the body as JSON")
	cf.BoolVar(&o.raw, "raw", false, "send the body as raw bytes")
	cf.StringVar(&o.thrift, "thrift", "", "a Thrift IDL `file`: METHOD is Service::method, the body a JSON object of its arguments, the answer printed as JSON")
	cf.StringVar(&o.proto, "proto", "", "a .proto `file` (imports beside it): METHOD is pkg.Service::Method (or /pkg.Service/Method), the body its request as JSON, the call in the proto encoding, the answer printed as JSON")
	cf.VarP(o.headers, "header", "H", "an application header, KEY=VALUE or \"KEY: VALUE\" (repeatable; a raw call carries them in arg2 as a JSON object)")
	cf.BoolVar(&o.explain, "explain", false, "after the call, show how the meshd routed it")
	cf.BoolVar(&o.trace, "trace", false, "record this call's trace whatever the sample rate")
	routingFlags(call)

	bench := &cobra.Command{
		Use:   "bench SERVICE METHOD [BODY|@FILE|-]",
		Short: "load a method and measure it: throughput, latency quantiles, a histogram, errors by code",
		Long: "bench drives raw calls at SERVICE METHOD, through the meshd at --via or straight at any TChannel peer there.\n" +
			"Closed loop by default (-c callers, each calls again when answered); --rps R is an open loop: R calls start\n" +
			"each second whatever the answers, and each call's latency counts from when it was due, so a stall is not\n" +
			"hidden. --timeout is each call's. Prints text, or JSON with -o json.\n\n" + exitHelp,
		Example: "  meshctl bench echo echo hello -d 30s --rps 1000 -c 64\n  meshctl bench kv get '{\"key\":\"a\"}' -n 10000 -o json\n" +
			"  meshctl bench words test.Words::Echo '{\"value\":\"hi\"}' --proto words.proto --grpc -c 32",
		Args: argsBetween(2, 3),
		RunE: func(c *cobra.Command, args []string) error {
			return exitOrNil(benchCmd(*o, args, stdin, stdout, stderr))
		},
	}
	bf := bench.Flags()
	bf.IntVarP(&o.calls, "calls", "n", 0, "calls to count (default: a 10s run)")
	bf.DurationVarP(&o.duration, "duration", "d", 0, "run this long instead of -n")
	bf.IntVarP(&o.concurrency, "concurrency", "c", 16, "callers: calls in flight at most")
	bf.IntVar(&o.connections, "connections", 2, "connections to --via")
	bf.Float64Var(&o.rps, "rps", 0, "open loop at this many calls a second (0: closed loop)")
	bf.DurationVar(&o.warmup, "warmup", time.Second, "calls made before this are not counted")
	bf.StringVar(&o.proto, "proto", "", "a .proto `file`: METHOD is pkg.Service::Method (or /pkg.Service/Method) and the body its request as JSON, encoded once; the calls are in the proto encoding")
	bf.BoolVar(&o.grpc, "grpc", false, "call over gRPC (HTTP/2, as a stock gRPC client would, the service in rpc-service metadata) instead of TChannel; METHOD as with --proto, the body the request message as it is unless --proto encodes it")
	routingFlags(bench)

	query := func(use, short, method string, args cobra.PositionalArgs, in func([]string) any) *cobra.Command {
		return &cobra.Command{
			Use: use, Short: short, Args: args,
			Long: short + ".\n\n" + exitHelp,
			RunE: func(c *cobra.Command, a []string) error {
				var body any
				if in != nil {
					body = in(a)
				}
				return withClient(o, stderr, func(ctx context.Context, cl *client.Client) int {
					return queryCmd(ctx, cl, method, body, o.output, stdout, stderr)
				})
			},
		}
	}
	trace := &cobra.Command{
		Use:   "trace TRACE_ID",
		Short: "draw a trace from a Zipkin or Jaeger API",
		Long:  "draw a trace from a Zipkin or Jaeger API (--traces, default $MESH_TRACES or http://127.0.0.1:16686).\n\n" + exitHelp,
		Args:  argsBetween(1, 1),
		RunE: func(c *cobra.Command, args []string) error {
			return exitOrNil(traceCmd(args[0], o.traces, stdout, stderr))
		},
	}
	trace.Flags().StringVar(&o.traces, "traces", "", "base URL of the trace backend's API")
	versionCmd := &cobra.Command{
		Use: "version", Short: "print meshctl's version and commit (also --version)", Args: argsBetween(0, 0),
		Run: func(c *cobra.Command, args []string) { fmt.Fprintln(stdout, version.String("meshctl")) },
	}
	root.AddCommand(call, bench,
		query("services", "list the services with healthy instances", "services", argsBetween(0, 0), nil),
		query("instances SERVICE", "list a service's healthy instances", "instances", argsBetween(1, 1), func(a []string) any { return map[string]string{"service": a[0]} }),
		query("status", "show the meshd's status", "status", argsBetween(0, 0), nil),
		trace, versionCmd)
	root.AddCommand(opsCommands(o, stdout, stderr)...)
	return root, o
}

// argsBetween checks the number of arguments, as a usage error.
func argsBetween(lo, hi int) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		if len(args) < lo || len(args) > hi {
			return fmt.Errorf("%s: wrong number of arguments (%d); usage: meshctl %s", c.Name(), len(args), c.Use)
		}
		return nil
	}
}

// withClient dials --via and runs f with a context of --timeout.
func withClient(o *opts, stderr io.Writer, f func(ctx context.Context, c *client.Client) int) error {
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	copts, err := o.clientOptions("meshctl")
	if err != nil {
		fmt.Fprintf(stderr, "meshctl: %v\n", err)
		return exitCode(exitUsage)
	}
	copts.Zipkin, copts.ZipkinEncoding = o.zipkin, o.encoding
	c, err := client.Dial(ctx, o.via, copts)
	if err != nil {
		fmt.Fprintf(stderr, "meshctl: cannot reach meshd at %s (--via) as %s: %v\n", o.via, o.identityName(), err)
		return exitCode(exitUnreachable)
	}
	if o.as != "" && c.Identity() != o.as {
		fmt.Fprintf(stderr, "meshctl: meshd did not take meshctl for %q (no token, and not meshd's own Unix user): its calls would go out anonymous\n", o.as)
		return exitCode(exitUsage)
	}
	defer c.Close()
	return exitOrNil(f(ctx, c))
}

// clientOptions are the SDK options of meshctl's connection: a process
// name, and with --as the service to prove and the token that proves it
// (CONSUL_HTTP_TOKEN, or --token-file).
func (o *opts) clientOptions(process string) (client.Options, error) {
	co := client.Options{ProcessName: process, Logger: slog.New(slog.DiscardHandler)}
	if o.as == "" {
		return co, nil
	}
	co.ServiceName, co.Token = o.as, os.Getenv("CONSUL_HTTP_TOKEN")
	if o.tokenFile != "" {
		b, err := os.ReadFile(o.tokenFile)
		if err != nil {
			return co, fmt.Errorf("--token-file: %w", err)
		}
		co.Token = strings.TrimSpace(string(b))
	}
	return co, nil
}

// identityName is who meshctl calls as, in words.
func (o *opts) identityName() string {
	if o.as == "" {
		return "anonymous"
	}
	return o.as
}

func exitOrNil(code int) error {
	if code == exitOK {
		return nil
	}
	return exitCode(code)
}

// run runs meshctl with args and returns its exit status.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root, _ := newRoot(stdin, stdout, stderr)
	root.SetArgs(args)
	err := root.Execute()
	var code exitCode
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &code): // the command said why already
		return int(code)
	}
	// Anything else is a command line meshctl cannot run: a bad flag, the
	// wrong number of arguments, an unknown command.
	fmt.Fprintf(stderr, "meshctl: %v\nRun 'meshctl --help' (or 'meshctl COMMAND --help') for usage.\n", err)
	return exitUsage
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
