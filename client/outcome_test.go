package client_test

import (
	"context"
	"errors"
	"io"
	"maps"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshrpc/mesh/client"
	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/meshd"
	"github.com/meshrpc/mesh/internal/testkit"
	"github.com/meshrpc/mesh/router"
)

// How an attempt ended, and what the Balancer must learn from it: the same
// table for the SDK's direct mode and for a call through meshd's relay,
// read from the metrics each Balancer writes (mesh_instance_attempts_total's result;
// none when the caller gave up, which says nothing of the instance).
var outcomes = []struct {
	method string
	cancel bool   // the caller gives up after 50ms
	result string // "": nothing recorded
}{
	{method: "ok", result: "ok"},
	{method: "apperr", result: "app_error"},
	{method: "busy", result: "busy"},
	{method: "timeout", result: "timeout"},
	{method: "unexpected", result: "unexpected"},
	{method: "badrequest", result: "bad_request"},
	{method: "slow", cancel: true, result: ""},
}

// judged serves service "judge", one method per row of outcomes.
func judged() *client.Server {
	srv := client.NewServer(client.Options{ServiceName: "judge", Logger: testkit.Quiet})
	answer := map[string]func(ctx context.Context) (*client.Response, error){
		"ok": func(context.Context) (*client.Response, error) { return &client.Response{Body: []byte("ok")}, nil },
		"apperr": func(context.Context) (*client.Response, error) {
			return nil, &client.ApplicationError{Body: []byte("no")}
		},
		"busy": func(context.Context) (*client.Response, error) { return nil, client.Errorf(frame.ErrCodeBusy, "busy") },
		"timeout": func(context.Context) (*client.Response, error) {
			return nil, client.Errorf(frame.ErrCodeTimeout, "late")
		},
		"unexpected": func(context.Context) (*client.Response, error) { return nil, errors.New("broken") },
		"badrequest": func(context.Context) (*client.Response, error) {
			return nil, client.Errorf(frame.ErrCodeBadRequest, "bad")
		},
		"slow": func(ctx context.Context) (*client.Response, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		},
	}
	for m, f := range answer {
		srv.Register("judge", m, client.HandlerFunc(func(ctx context.Context, _ *client.Call) (*client.Response, error) { return f(ctx) }))
	}
	return srv
}

func TestOutcomesJudgedAlikeDirectAndThroughMeshd(t *testing.T) {
	once := router.Policies{"judge": {MaxAttempts: 1}} // each attempt is the call

	t.Run("direct", func(t *testing.T) {
		srv := judged()
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go srv.Serve(l)
		t.Cleanup(func() { srv.Shutdown(context.Background()) })
		c, err := client.DialPeers(context.Background(), []string{l.Addr().String()}, client.Options{ServiceName: "caller", Logger: testkit.Quiet, Policies: once})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		judgeAll(t, c, func() string { return client.DirectMetrics(c) })
	})

	t.Run("meshd", func(t *testing.T) {
		d, err := meshd.Start(meshd.Config{Listen: "127.0.0.1:0", Admin: "127.0.0.1:0", Registry: discovery.NewLocal(), Logger: testkit.Quiet, Policies: once})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Shutdown(context.Background()) })
		srv := judged()
		if err := srv.Advertise(context.Background(), d.Addr()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Shutdown(context.Background()) })
		c, err := client.Dial(context.Background(), d.Addr(), client.Options{ServiceName: "caller", Logger: testkit.Quiet})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		judgeAll(t, c, func() string {
			res, err := http.Get("http://" + d.AdminAddr() + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			b, _ := io.ReadAll(res.Body)
			return string(b)
		})
	})
}

// judgeAll makes each row's call and checks what the Balancer recorded of
// it, once the attempt is no longer in flight.
func judgeAll(t *testing.T, c *client.Client, metrics func() string) {
	t.Helper()
	for _, tc := range outcomes {
		before := judgeResults(metrics())
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if tc.cancel {
			time.AfterFunc(50*time.Millisecond, cancel)
		}
		_, err := c.Call(ctx, "judge", tc.method, nil, nil)
		cancel()
		if tc.result == "ok" && err != nil || tc.result != "ok" && err == nil {
			t.Fatalf("%s: call answered %v", tc.method, err)
		}
		var got map[string]int
		testkit.WaitFor(t, 2*time.Second, tc.method+"'s attempt done", func() bool {
			text := metrics()
			got = diff(before, judgeResults(text))
			return inFlight(text) == 0 && (tc.result == "" || len(got) > 0)
		})
		want := map[string]int{}
		if tc.result != "" {
			want[tc.result] = 1
		}
		if !maps.Equal(got, want) {
			t.Errorf("%s (cancelled: %v): the Balancer recorded %v, want %v", tc.method, tc.cancel, got, want)
		}
	}
}

var sample = regexp.MustCompile(`^(\w+)\{([^}]*)\} (\S+)$`)
var label = regexp.MustCompile(`(\w+)="([^"]*)"`)

// series reads the samples of metric name for service "judge" from a
// Prometheus text exposition, keyed by the label key.
func series(text, name, key string) map[string]int {
	out := map[string]int{}
	for _, line := range strings.Split(text, "\n") {
		m := sample.FindStringSubmatch(line)
		if m == nil || m[1] != name {
			continue
		}
		labels := map[string]string{}
		for _, l := range label.FindAllStringSubmatch(m[2], -1) {
			labels[l[1]] = l[2]
		}
		if labels["service"] != "judge" {
			continue
		}
		v, _ := strconv.ParseFloat(m[3], 64)
		out[labels[key]] += int(v)
	}
	return out
}

func judgeResults(text string) map[string]int {
	return series(text, "mesh_instance_attempts_total", "result")
}

func inFlight(text string) int {
	return series(text, "mesh_instance_attempts_in_flight", "service")["judge"]
}

func diff(before, after map[string]int) map[string]int {
	out := map[string]int{}
	for k, v := range after {
		if d := v - before[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}
