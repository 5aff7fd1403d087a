// Command echo is an example raw service: method "echo" answers with the
// body it got, "whoami" with its host and pid, "fail" with an application
// error, "sleep" waits for the duration in its body, and "forward" calls the
// service and method its JSON body names. It advertises to a meshd.
package main

import (
	"context"
	"encoding/json"
	"os"
	"time"

	"github.com/meshrpc/mesh/client"
	"github.com/meshrpc/mesh/examples/internal/run"
)

func main() {
	f := run.ParseFlags("echo")
	name, log := &f.Service, run.Logger(f.Service)

	host, _ := os.Hostname()
	s := client.NewServer(f.Options(log))
	// forward calls another service through the same meshd, so one call can
	// cross several hosts (and show as one trace).
	forwarder := run.Dial(f, log)
	s.Register(*name, "forward", client.HandlerFunc(func(ctx context.Context, call *client.Call) (*client.Response, error) {
		var to struct{ Service, Method, Body string }
		if err := json.Unmarshal(call.Body, &to); err != nil || to.Service == "" {
			return nil, &client.ApplicationError{Body: []byte(`forward wants {"service":..., "method":..., "body":...}`)}
		}
		out := forwarder.Get()
		if out == nil {
			return nil, &client.ApplicationError{Body: []byte("not connected to meshd yet (see this service's log)")}
		}
		res, err := out.Call(ctx, to.Service, to.Method, nil, []byte(to.Body))
		if err != nil {
			return nil, err
		}
		return &client.Response{Body: res.Body}, nil
	}))
	s.Register(*name, "echo", client.HandlerFunc(func(ctx context.Context, call *client.Call) (*client.Response, error) {
		return &client.Response{Headers: call.Headers, Body: call.Body}, nil
	}))
	s.Register(*name, "whoami", client.HandlerFunc(func(ctx context.Context, call *client.Call) (*client.Response, error) {
		return &client.Response{Body: []byte(host + " pid " + itoa(os.Getpid()))}, nil
	}))
	s.Register(*name, "fail", client.HandlerFunc(func(ctx context.Context, call *client.Call) (*client.Response, error) {
		return nil, &client.ApplicationError{Body: []byte("failed on purpose")}
	}))
	s.Register(*name, "sleep", client.HandlerFunc(func(ctx context.Context, call *client.Call) (*client.Response, error) {
		d, err := time.ParseDuration(string(call.Body))
		if err != nil {
			return nil, &client.ApplicationError{Body: []byte("body must be a duration like 100ms")}
		}
		select {
		case <-time.After(d):
			return &client.Response{Body: []byte("slept " + d.String())}, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}))
	run.Serve(s, f.Meshd, log)
}

func itoa(n int) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		if n /= 10; n == 0 {
			return string(b[i:])
		}
	}
}
