package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/meshrpc/mesh/client"
	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/protojson"
	"github.com/meshrpc/mesh/internal/thriftjson"
)

// Exit codes (meshctl --help says them too): 0 ok, 1 the call failed (an
// application or wire error, a bench call that failed, no instances), 2
// usage or bad input, 3 meshd unreachable.
const (
	exitOK = iota
	exitCallFailed
	exitUsage
	exitUnreachable
)

func readBody(arg string, stdin io.Reader) ([]byte, error) {
	switch {
	case arg == "-":
		return io.ReadAll(stdin)
	case strings.HasPrefix(arg, "@"):
		return os.ReadFile(arg[1:])
	}
	return []byte(arg), nil
}

func callCmd(ctx context.Context, c *client.Client, o opts, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	service, method := args[0], args[1]
	var body []byte
	if len(args) == 3 {
		var err error
		if body, err = readBody(args[2], stdin); err != nil {
			fmt.Fprintf(stderr, "meshctl: reading body: %v\n", err)
			return exitUsage
		}
	}
	if o.thrift != "" {
		return thriftCall(ctx, c, o, service, method, body, stdout, stderr)
	}
	if o.proto != "" {
		return protoCall(ctx, c, o, service, method, body, stdout, stderr)
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
	copts = append(copts, o.routing()...)
	start := time.Now()
	defer func() { fmt.Fprintf(stderr, "(%s)\n", time.Since(start).Round(10*time.Microsecond)) }()
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
	// A raw call's arg2 is opaque bytes; headers given with -H go in it as a
	// JSON object, the form of the JSON scheme's arg2, which is what raw
	// services that read headers at all take.
	var arg2 []byte
	if len(o.headers) > 0 {
		arg2, _ = json.Marshal(map[string]string(o.headers))
	}
	res, err := c.Call(ctx, service, method, arg2, body, copts...)
	if err != nil {
		code := fail(err, stdout, stderr)
		if !o.raw && len(body) > 0 {
			fmt.Fprintln(stderr, "(the body is not JSON, so it went raw; --json sends it as JSON, and says why it is not)")
		}
		return code
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

// queryCmd asks meshd's own service (services, instances, status) and
// prints the answer as JSON (the default) or a table.
func queryCmd(ctx context.Context, c *client.Client, method string, in any, output string, stdout, stderr io.Writer) int {
	if output != "" && output != "json" && output != "table" && output != "text" {
		fmt.Fprintf(stderr, "meshctl %s: -o %q: want json or table\n", method, output)
		return exitUsage
	}
	var out json.RawMessage
	if _, err := c.CallJSON(ctx, "meshd", method, nil, in, &out); err != nil {
		return fail(err, stdout, stderr)
	}
	empty := method == "instances" && (string(out) == "null" || string(out) == "[]")
	if empty {
		out = json.RawMessage("[]")
	}
	if output == "table" || output == "text" {
		printTable(method, out, stdout)
	} else {
		printJSON(out, stdout)
	}
	if empty {
		fmt.Fprintf(stderr, "meshctl: no healthy instances of %q (meshctl services lists those with some)\n", in.(map[string]string)["service"])
		return exitCallFailed
	}
	return exitOK
}

// printTable prints meshd's answers for people.
func printTable(method string, out json.RawMessage, w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	switch method {
	case "services":
		var names []string
		json.Unmarshal(out, &names)
		for _, n := range names {
			fmt.Fprintln(tw, n)
		}
	case "instances":
		var insts []struct {
			ID, Addr string
			Meta     map[string]string
		}
		json.Unmarshal(out, &insts)
		fmt.Fprintln(tw, "INSTANCE\tMESHD\tNODE\tPROCESS")
		for _, i := range insts {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", i.ID, i.Addr, i.Meta["node"], i.Meta["process"])
		}
	default:
		var st map[string]any
		json.Unmarshal(out, &st)
		keys := make([]string, 0, len(st))
		for k := range st {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			v, _ := json.Marshal(st[k])
			fmt.Fprintf(tw, "%s\t%s\n", k, v)
		}
	}
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
	if id := c.Identity(); id != "" {
		fmt.Fprintf(w, "  meshctl called as %q, proven to the meshd\n", id)
	} else {
		fmt.Fprintln(w, "  meshctl called anonymous (--as proves a service name); intentions must name anonymous to let it in")
	}
	if r.Refused != "" {
		fmt.Fprintf(w, "  refused by the meshd: %s\n", r.Refused)
	}
	for i, a := range r.Attempts {
		fmt.Fprintf(w, "  attempt %d: %s at %s\n    why: %s\n    result: %s in %.2f ms\n", i+1, a.Instance, a.Addr, a.Why, a.Result, a.Millis)
	}
	fmt.Fprintf(w, "  outcome: %s\n", r.Result)
}

// protoCall calls a method in the proto encoding: the body is its request
// as JSON, encoded with the .proto file in --proto, and the answer is
// printed as JSON (an application error's message goes to stderr, exit 1).
func protoCall(ctx context.Context, c *client.Client, o opts, service, method string, body []byte, stdout, stderr io.Writer) int {
	idl, err := protojson.Load(o.proto)
	if err != nil {
		fmt.Fprintf(stderr, "meshctl: --proto %s: %v\n", o.proto, err)
		return exitUsage
	}
	m, err := idl.Method(method)
	if err != nil {
		fmt.Fprintf(stderr, "meshctl: %v\n", err)
		return exitUsage
	}
	req, err := m.Request(body)
	if err != nil {
		fmt.Fprintf(stderr, "meshctl: the request: %v\n", err)
		return exitUsage
	}
	res := m.NewResponse()
	start := time.Now()
	hdrs, err := c.CallProto(ctx, service, m.Procedure(), o.headers, req, res, o.routing()...)
	fmt.Fprintf(stderr, "(%s)\n", time.Since(start).Round(10*time.Microsecond))
	printHeaders(hdrs, stderr)
	var app *client.ApplicationError
	if errors.As(err, &app) {
		fmt.Fprintf(stderr, "error: %s: %s\n", method, app.Message)
		return exitCallFailed
	}
	if err != nil {
		return fail(err, stdout, stderr)
	}
	out, err := protojson.JSON(res)
	if err != nil {
		fmt.Fprintf(stderr, "meshctl: the answer: %v\n", err)
		return exitCallFailed
	}
	printJSON(out, stdout)
	return exitOK
}

// thriftCall calls a Thrift method: the body is a JSON object of its
// arguments, encoded with the IDL in --thrift, and the answer is decoded to
// JSON with it (a declared exception goes to stderr, exit 1).
func thriftCall(ctx context.Context, c *client.Client, o opts, service, method string, body []byte, stdout, stderr io.Writer) int {
	idl, err := thriftjson.Load(o.thrift)
	if err != nil {
		fmt.Fprintf(stderr, "meshctl: --thrift %s: %v\n", o.thrift, err)
		return exitUsage
	}
	fn, err := idl.Function(method)
	if err != nil {
		fmt.Fprintf(stderr, "meshctl: %v\n", err)
		return exitUsage
	}
	args, err := fn.EncodeArgs(body)
	if err != nil {
		fmt.Fprintf(stderr, "meshctl: %v\n", err)
		return exitUsage
	}
	start := time.Now()
	res, hdrs, _, err := c.CallThrift(ctx, service, method, o.headers, args, o.routing()...)
	fmt.Fprintf(stderr, "(%s)\n", time.Since(start).Round(10*time.Microsecond))
	if err != nil {
		return fail(err, stdout, stderr)
	}
	printHeaders(hdrs, stderr)
	out, exception, err := fn.DecodeResult(res)
	if err != nil {
		fmt.Fprintf(stderr, "meshctl: the answer does not decode with %s: %v\n", o.thrift, err)
		return exitCallFailed
	}
	if exception != "" {
		fmt.Fprintf(stderr, "error: %s raised %s: %s\n", method, exception, out)
		return exitCallFailed
	}
	printJSON(out, stdout)
	return exitOK
}
