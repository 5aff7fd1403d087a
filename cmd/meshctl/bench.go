package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync/atomic"
	"time"

	"github.com/meshrpc/mesh/client"
	"github.com/meshrpc/mesh/internal/loadgen"
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
	dctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	dopts, err := o.clientOptions("meshctl-bench")
	if err != nil {
		fmt.Fprintf(stderr, "meshctl bench: %v\n", err)
		return exitUsage
	}
	clients := make([]*client.Client, o.connections)
	for i := range clients {
		c, err := client.Dial(dctx, o.via, dopts)
		if err != nil {
			fmt.Fprintf(stderr, "meshctl bench: cannot reach %s: %v\n", o.via, err)
			return exitUnreachable
		}
		defer c.Close()
		clients[i] = c
	}
	copts := o.routing()
	var next atomic.Uint64
	call := func(ctx context.Context) error {
		c := clients[int(next.Add(1)%uint64(len(clients)))]
		ctx, cancel := context.WithTimeout(ctx, o.timeout)
		defer cancel()
		_, err := c.Call(ctx, service, method, nil, body, copts...)
		return err
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

// errorClass names a failed call by its TChannel code, "application" for
// an application error.
func errorClass(err error) string {
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
