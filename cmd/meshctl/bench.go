package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"time"

	"github.com/meshrpc/mesh/client"
	"github.com/meshrpc/mesh/internal/grpcgate"
	"github.com/meshrpc/mesh/internal/loadgen"
	"github.com/meshrpc/mesh/internal/protojson"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// bench drives load at SERVICE METHOD through the meshd at --via (or
// straight at a TChannel peer there that serves SERVICE), then prints what
// it measured: as text, or as JSON with -o json for scripts.
func benchCmd(o opts, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	service, method := args[0], args[1]
	var body []byte
	if len(args) == 3 {
		var err error
		if body, err = readBody(args[2], stdin); err != nil {
			fmt.Fprintf(stderr, "meshctl bench: reading body: %v\n", err)
			return exitUsage
		}
	}
	if o.output == "" {
		o.output = "text"
	}
	if o.output != "text" && o.output != "json" {
		fmt.Fprintf(stderr, "meshctl bench: -o %q: want text or json\n", o.output)
		return exitUsage
	}
	if o.calls > 0 && o.duration > 0 {
		fmt.Fprintln(stderr, "meshctl bench: -n and -d exclude each other")
		return exitUsage
	}
	if o.calls == 0 && o.duration == 0 {
		o.duration = 10 * time.Second
	}
	if o.concurrency <= 0 || o.connections <= 0 || o.rps < 0 {
		fmt.Fprintln(stderr, "meshctl bench: -c and --connections must be above 0, --rps 0 or more")
		return exitUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	var call loadgen.Call
	var code int
	if o.proto != "" || o.grpc {
		call, code = protoCaller(ctx, o, service, method, body, stderr)
	} else {
		call, code = rawCaller(ctx, o, service, method, body, stderr)
	}
	if call == nil {
		return code
	}
	cfg := loadgen.Config{Calls: o.calls, Duration: o.duration, Concurrency: o.concurrency, RPS: o.rps, Warmup: o.warmup, Classify: errorClass}
	if isTerminal(stderr) {
		cfg.Progress = func(p loadgen.Progress) { fmt.Fprintf(stderr, "\r\033[K%s", p.Line()) }
	}
	r, err := loadgen.Run(ctx, cfg, call)
	if cfg.Progress != nil {
		fmt.Fprint(stderr, "\r\033[K")
	}
	if err != nil {
		fmt.Fprintf(stderr, "meshctl bench: %v\n", err)
		return exitUsage
	}
	if o.output == "json" {
		b, _ := json.MarshalIndent(r, "", "  ")
		fmt.Fprintf(stdout, "%s\n", b)
	} else {
		r.WriteText(stdout)
	}
	if r.Errors > 0 {
		return exitCallFailed
	}
	return exitOK
}

// rawCaller makes raw TChannel calls on --connections connections to --via.
func rawCaller(ctx context.Context, o opts, service, method string, body []byte, stderr io.Writer) (loadgen.Call, int) {
	clients, code := dialAll(ctx, o, stderr)
	if clients == nil {
		return nil, code
	}
	copts := o.routing()
	return roundRobin(clients, o.timeout, func(ctx context.Context, c *client.Client) error {
		_, err := c.Call(ctx, service, method, nil, body, copts...)
		return err
	}), exitOK
}

// roundRobin is a bench call that takes the next of conns each time, within
// the timeout.
func roundRobin[C any](conns []C, timeout time.Duration, call func(ctx context.Context, c C) error) loadgen.Call {
	var next atomic.Uint64
	return func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		return call(ctx, conns[int(next.Add(1)%uint64(len(conns)))])
	}
}

// dialAll opens --connections SDK connections to --via; they close with ctx.
func dialAll(ctx context.Context, o opts, stderr io.Writer) ([]*client.Client, int) {
	dctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	dopts, err := o.clientOptions("meshctl-bench")
	if err != nil {
		fmt.Fprintf(stderr, "meshctl bench: %v\n", err)
		return nil, exitUsage
	}
	clients := make([]*client.Client, o.connections)
	for i := range clients {
		c, err := client.Dial(dctx, o.via, dopts)
		if err != nil {
			fmt.Fprintf(stderr, "meshctl bench: cannot reach %s: %v\n", o.via, err)
			return nil, exitUnreachable
		}
		context.AfterFunc(ctx, func() { c.Close() })
		clients[i] = c
	}
	return clients, exitOK
}

// protoCaller makes calls of a protobuf method: in the proto encoding over
// TChannel, or over gRPC with --grpc. With --proto the body is the request
// as JSON, encoded once; without, it is the request message's bytes.
func protoCaller(ctx context.Context, o opts, service, method string, body []byte, stderr io.Writer) (loadgen.Call, int) {
	procedure := method
	if p, ok := strings.CutPrefix(method, "/"); ok {
		procedure = strings.Replace(p, "/", "::", 1)
	}
	var m *protojson.Method
	var req proto.Message
	if o.proto != "" {
		idl, err := protojson.Load(o.proto)
		if err != nil {
			fmt.Fprintf(stderr, "meshctl bench: --proto %s: %v\n", o.proto, err)
			return nil, exitUsage
		}
		if m, err = idl.Method(method); err != nil {
			fmt.Fprintf(stderr, "meshctl bench: %v\n", err)
			return nil, exitUsage
		}
		req, err = m.Request(body)
		if err == nil {
			body, err = proto.Marshal(req)
		}
		if err != nil {
			fmt.Fprintf(stderr, "meshctl bench: the request: %v\n", err)
			return nil, exitUsage
		}
		procedure = m.Procedure()
	}
	svc, name, ok := strings.Cut(procedure, "::")
	if !ok || svc == "" || name == "" {
		fmt.Fprintf(stderr, "meshctl bench: %q: want pkg.Service::Method or /pkg.Service/Method\n", method)
		return nil, exitUsage
	}
	if !o.grpc { // the proto encoding over TChannel (--proto is set)
		clients, code := dialAll(ctx, o, stderr)
		if clients == nil {
			return nil, code
		}
		copts := o.routing()
		return roundRobin(clients, o.timeout, func(ctx context.Context, c *client.Client) error {
			_, err := c.CallProto(ctx, service, procedure, nil, req, m.NewResponse(), copts...)
			return err
		}), exitOK
	}
	target := o.via
	if strings.HasPrefix(target, "unix:") {
		target = "unix://" + strings.TrimPrefix(target, "unix:")
	} else {
		target = "passthrough:///" + target
	}
	md := []string{"rpc-service", service}
	for k, v := range map[string]string{"rpc-caller": o.caller, "rpc-shard-key": o.shardKey, "rpc-routing-key": o.routeKey} {
		if v != "" {
			md = append(md, k, v)
		}
	}
	conns := make([]*grpc.ClientConn, o.connections)
	for i := range conns {
		cc, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			fmt.Fprintf(stderr, "meshctl bench: %s: %v\n", o.via, err)
			return nil, exitUsage
		}
		context.AfterFunc(ctx, func() { cc.Close() })
		conns[i] = cc
	}
	path := "/" + svc + "/" + name
	return roundRobin(conns, o.timeout, func(ctx context.Context, cc *grpc.ClientConn) error {
		var out []byte
		return cc.Invoke(metadata.AppendToOutgoingContext(ctx, md...), path, &body, &out, grpc.ForceCodecV2(grpcgate.RawCodec{}))
	}), exitOK
}

// errorClass names a failed call by its TChannel code, "application" for
// an application error, its gRPC status for a gRPC call.
func errorClass(err error) string {
	if s, ok := status.FromError(err); ok && s.Code() != codes.OK {
		return s.Code().String()
	}
	var ae *client.ApplicationError
	if errors.As(err, &ae) {
		return "application"
	}
	var e *client.Error
	if errors.As(err, &e) {
		return e.Code.String()
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "timeout"
	}
	return "error"
}

// isTerminal reports whether w is a terminal (a live progress line makes
// sense there, not in a file or a pipe).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
