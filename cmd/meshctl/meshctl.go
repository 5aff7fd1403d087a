package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/meshrpc/mesh/client"
	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/version"
)

// Exit codes: 0 ok, 1 the call failed (application or wire error), 2 usage
// or bad input, 3 meshd unreachable.
const (
	exitOK = iota
	exitCallFailed
	exitUsage
	exitUnreachable
)

const usage = `meshctl: talk to a mesh.

Usage:
  meshctl call SERVICE METHOD [BODY|@FILE|-] [flags]   call a method (body from the argument, a file, or stdin)
  meshctl bench SERVICE METHOD [BODY|@FILE|-] [flags]  load a method: -n calls or -d duration, -c callers, --rps
                                                       (open loop), --connections, --warmup, -o text|json
  meshctl services [flags]                             list services with healthy instances
  meshctl instances SERVICE [flags]                    list a service's instances
  meshctl status [flags]                               show the meshd's status
  meshctl trace TRACE_ID [--traces URL]                draw a trace from a Zipkin or Jaeger API
                                                       (default $MESH_TRACES or http://127.0.0.1:16686)
  meshctl version                                      print meshctl's version and commit (also --version)

Flags (anywhere on the line):
  --via HOST:PORT     the meshd to talk to (default $MESH_VIA or 127.0.0.1:21300)
  --timeout DURATION  deadline of the call: 250ms, 1.5s, or bare milliseconds (default 5s)
  --json | --raw      arg scheme of a call (default: json if the body is JSON, else raw)
  -H KEY=VALUE        an application header, also "KEY: VALUE" (repeatable; JSON calls)
  --shard-key KEY     route by shard key (affinity)
  --explain           after a call, show how the meshd routed it
  --trace             record this call's trace whatever the sample rate
  --zipkin URL        send meshctl's own span there too (default $MESH_ZIPKIN)
  --zipkin-encoding E proto or json, as the backend takes (default $MESH_ZIPKIN_ENCODING, else proto)

Exit status: 0 ok; 1 the call failed (an application or wire error, a bench call that failed, a service
with no healthy instances); 2 usage or bad input; 3 meshd unreachable.

Bench flags (raw calls; --timeout is each call's):
  -n N                calls to count (default: -d 10s)
  -d DURATION         run this long instead
  -c N                callers: calls in flight at most (default 16)
  --rps R             open loop: start R calls a second whatever the answers (latency counts from when a call
                      was due, so a stall is not hidden); 0: closed loop, each caller calls again when answered
  --connections N     connections to --via (default 2)
  --warmup DURATION   calls made before this are not counted (default 1s)
  -o text|json        what to print (default text; json for scripts)
  Through a meshd, or straight at any TChannel peer that serves SERVICE (--via its address).
  Exit status 1 when a call failed.
`

type headerFlags map[string]string

func (h headerFlags) String() string { return fmt.Sprint(map[string]string(h)) }

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
func (f *timeoutFlag) Set(v string) error {
	d, err := time.ParseDuration(v)
	if ms, nerr := strconv.ParseFloat(v, 64); nerr == nil {
		d, err = time.Duration(ms*float64(time.Millisecond)), nil
	}
	if err != nil {
		return fmt.Errorf("--timeout %q: want a duration (250ms, 1.5s) or milliseconds (250)", v)
	}
	if d < time.Millisecond {
		return fmt.Errorf("--timeout %s: at least 1ms (a call's ttl is in whole milliseconds)", d)
	}
	*f = timeoutFlag(d)
	return nil
}

type opts struct {
	via      string
	timeout  time.Duration
	json     bool
	raw      bool
	headers  headerFlags
	shardKey string
	explain  bool
	trace    bool
	zipkin   string
	encoding string
	traces   string
	// bench
	calls, concurrency, connections int
	duration, warmup                time.Duration
	rps                             float64
	output                          string
}

// parse reads flags wherever they stand among the arguments.
func parse(args []string, stderr io.Writer) (opts, []string, error) {
	o := opts{headers: headerFlags{}}
	via := os.Getenv("MESH_VIA")
	if via == "" {
		via = "127.0.0.1:21300"
	}
	fs := flag.NewFlagSet("meshctl", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.via, "via", via, "")
	o.timeout = 5 * time.Second
	fs.Var((*timeoutFlag)(&o.timeout), "timeout", "")
	fs.BoolVar(&o.json, "json", false, "")
	fs.BoolVar(&o.raw, "raw", false, "")
	fs.Var(o.headers, "H", "")
	fs.StringVar(&o.shardKey, "shard-key", "", "")
	fs.BoolVar(&o.explain, "explain", false, "")
	fs.BoolVar(&o.trace, "trace", false, "")
	fs.StringVar(&o.zipkin, "zipkin", os.Getenv("MESH_ZIPKIN"), "")
	fs.StringVar(&o.encoding, "zipkin-encoding", os.Getenv("MESH_ZIPKIN_ENCODING"), "")
	fs.StringVar(&o.traces, "traces", "", "")
	fs.IntVar(&o.calls, "n", 0, "")
	fs.DurationVar(&o.duration, "d", 0, "")
	fs.IntVar(&o.concurrency, "c", 16, "")
	fs.IntVar(&o.connections, "connections", 2, "")
	fs.Float64Var(&o.rps, "rps", 0, "")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "")
	fs.StringVar(&o.output, "o", "text", "")
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return o, nil, err
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if o.json && o.raw {
		return o, nil, errors.New("--json and --raw exclude each other")
	}
	return o, pos, nil
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	if args[0] == "version" || args[0] == "--version" {
		fmt.Fprintln(stdout, version.String("meshctl"))
		return exitOK
	}
	o, pos, err := parse(args, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "meshctl: %v\n\n%s", err, usage)
		return exitUsage
	}
	cmd, rest := pos[0], pos[1:]
	want := map[string][2]int{"call": {2, 3}, "bench": {2, 3}, "services": {0, 0}, "instances": {1, 1}, "status": {0, 0}, "trace": {1, 1}}
	n, ok := want[cmd]
	if !ok {
		fmt.Fprintf(stderr, "meshctl: unknown command %q\n\n%s", cmd, usage)
		return exitUsage
	}
	if len(rest) < n[0] || len(rest) > n[1] {
		fmt.Fprintf(stderr, "meshctl %s: wrong number of arguments\n\n%s", cmd, usage)
		return exitUsage
	}
	if cmd == "trace" {
		return traceCmd(rest[0], o.traces, stdout, stderr)
	}
	if cmd == "bench" {
		return bench(o, rest, stdin, stdout, stderr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	// A process name, not a service name: meshctl is a person's tool, so it does
	// not try to prove a service identity (its calls are anonymous).
	c, err := client.Dial(ctx, o.via, client.Options{ProcessName: "meshctl", Zipkin: o.zipkin, ZipkinEncoding: o.encoding, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		fmt.Fprintf(stderr, "meshctl: cannot reach meshd at %s: %v\n", o.via, err)
		return exitUnreachable
	}
	defer c.Close()
	switch cmd {
	case "call":
		return call(ctx, c, o, rest, stdin, stdout, stderr)
	case "services":
		return meshdQuery(ctx, c, "services", nil, stdout, stderr)
	case "instances":
		var out []json.RawMessage
		if _, err := c.CallJSON(ctx, "meshd", "instances", nil, map[string]string{"service": rest[0]}, &out); err != nil {
			return fail(err, stdout, stderr)
		}
		b, _ := json.Marshal(out)
		if len(out) == 0 {
			b = []byte("[]")
		}
		printJSON(b, stdout)
		if len(out) == 0 {
			fmt.Fprintf(stderr, "meshctl: no healthy instances of %q (meshctl services lists those with some)\n", rest[0])
			return exitCallFailed
		}
		return exitOK
	default:
		return meshdQuery(ctx, c, "status", nil, stdout, stderr)
	}
}

func readBody(arg string, stdin io.Reader) ([]byte, error) {
	switch {
	case arg == "-":
		return io.ReadAll(stdin)
	case strings.HasPrefix(arg, "@"):
		return os.ReadFile(arg[1:])
	}
	return []byte(arg), nil
}

func call(ctx context.Context, c *client.Client, o opts, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	service, method := args[0], args[1]
	var body []byte
	if len(args) == 3 {
		var err error
		if body, err = readBody(args[2], stdin); err != nil {
			fmt.Fprintf(stderr, "meshctl: reading body: %v\n", err)
			return exitUsage
		}
	}
	useJSON := o.json || !o.raw && json.Valid(body) && len(bytes.TrimSpace(body)) > 0
	var sent frame.Tracing
	copts := []client.CallOption{client.ReportTracing(&sent)}
	if o.trace {
		copts = append(copts, client.WithTrace())
	}
	if o.zipkin == "" && !o.trace {
		// Not traced: still give the call ids, so the meshd's record of it can be found.
		id := rand.Uint64() | 1
		copts = append(copts, client.WithTracing(frame.Tracing{SpanID: id, TraceID: id}))
	}
	defer func() {
		if sent.TraceID != 0 && (o.trace || o.zipkin != "") {
			fmt.Fprintf(stderr, "trace id: %s\n", client.TraceID(sent))
		}
		if o.explain {
			explain(c, sent.SpanID, stderr)
		}
	}()
	if o.shardKey != "" {
		copts = append(copts, client.WithShardKey(o.shardKey))
	}
	if useJSON {
		if len(bytes.TrimSpace(body)) == 0 {
			body = []byte("null")
		}
		if !json.Valid(body) {
			fmt.Fprintln(stderr, "meshctl: --json body is not valid JSON")
			return exitUsage
		}
		var out json.RawMessage
		hdrs, err := c.CallJSON(ctx, service, method, o.headers, json.RawMessage(body), &out, copts...)
		if err != nil {
			return fail(err, stdout, stderr)
		}
		printHeaders(hdrs, stderr)
		printJSON(out, stdout)
		return exitOK
	}
	var arg2 []byte
	if len(o.headers) > 0 {
		fmt.Fprintln(stderr, "meshctl: -H headers need the JSON scheme (raw headers are opaque bytes)")
		return exitUsage
	}
	res, err := c.Call(ctx, service, method, arg2, body, copts...)
	if err != nil {
		return fail(err, stdout, stderr)
	}
	stdout.Write(res.Body)
	if len(res.Body) > 0 && res.Body[len(res.Body)-1] != '\n' {
		fmt.Fprintln(stdout)
	}
	return exitOK
}

func printHeaders(h map[string]string, w io.Writer) {
	for k, v := range h {
		fmt.Fprintf(w, "< %s: %s\n", k, v)
	}
}

func printJSON(b []byte, w io.Writer) {
	var buf bytes.Buffer
	if json.Indent(&buf, b, "", "  ") != nil {
		w.Write(b)
		fmt.Fprintln(w)
		return
	}
	buf.WriteByte('\n')
	w.Write(buf.Bytes())
}

// fail prints a call's error with its code and picks the exit status.
func fail(err error, stdout, stderr io.Writer) int {
	var ae *client.ApplicationError
	if errors.As(err, &ae) {
		fmt.Fprintf(stderr, "error: application error: %s\n", firstNonEmpty(ae.Message, string(ae.Body)))
		return exitCallFailed
	}
	var e *client.Error
	if errors.As(err, &e) {
		fmt.Fprintf(stderr, "error: %s (code 0x%02x): %s\n", e.Code, byte(e.Code), e.Message)
		if e.Code == frame.ErrCodeNetwork {
			return exitUnreachable
		}
		return exitCallFailed
	}
	fmt.Fprintf(stderr, "error: %v\n", err)
	return exitCallFailed
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func meshdQuery(ctx context.Context, c *client.Client, method string, in any, stdout, stderr io.Writer) int {
	var out json.RawMessage
	if _, err := c.CallJSON(ctx, "meshd", method, nil, in, &out); err != nil {
		return fail(err, stdout, stderr)
	}
	printJSON(out, stdout)
	return exitOK
}

// explain prints how the meshd routed the call with the given span id.
func explain(c *client.Client, span uint64, w io.Writer) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var recs []struct {
		Service  string `json:"service"`
		Caller   string `json:"caller"`
		TraceID  string `json:"trace_id"`
		Refused  string `json:"refused"`
		Result   string `json:"result"`
		Attempts []struct {
			Instance string  `json:"instance"`
			Addr     string  `json:"addr"`
			Why      string  `json:"why"`
			Result   string  `json:"result"`
			Millis   float64 `json:"ms"`
		} `json:"attempts"`
	}
	if _, err := c.CallJSON(ctx, "meshd", "explain", nil, map[string]string{"span_id": fmt.Sprintf("%016x", span)}, &recs); err != nil {
		fmt.Fprintf(w, "explain: %v\n", err)
		return
	}
	if len(recs) == 0 {
		fmt.Fprintln(w, "explain: the meshd has no record of this call (served by meshd itself, or gone from its recent calls)")
		return
	}
	r := recs[0]
	fmt.Fprintf(w, "route of this call (trace %s), service %q from %q:\n", r.TraceID, r.Service, r.Caller)
	if r.Refused != "" {
		fmt.Fprintf(w, "  refused by the meshd: %s\n", r.Refused)
	}
	for i, a := range r.Attempts {
		fmt.Fprintf(w, "  attempt %d: %s at %s\n    why: %s\n    result: %s in %.2f ms\n", i+1, a.Instance, a.Addr, a.Why, a.Result, a.Millis)
	}
	fmt.Fprintf(w, "  outcome: %s\n", r.Result)
}
