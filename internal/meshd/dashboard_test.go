package meshd_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meshrpc/mesh/client"
	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/dashboard"
	"github.com/meshrpc/mesh/internal/intentions"
	"github.com/meshrpc/mesh/internal/meshd"
	"github.com/meshrpc/mesh/internal/relay"
	"github.com/meshrpc/mesh/internal/testkit"
	"github.com/meshrpc/mesh/internal/tracequery"
	"github.com/meshrpc/mesh/internal/tracing"
	"github.com/meshrpc/mesh/internal/zipkintest"
)

// failing advertises service with a method ok and a method that fails.
func failing(t *testing.T, addr, service string) {
	t.Helper()
	s := client.NewServer(client.Options{ServiceName: service, Logger: testkit.Quiet})
	s.Register(service, "ok", client.HandlerFunc(func(ctx context.Context, _ *client.Call) (*client.Response, error) {
		return &client.Response{Body: []byte("ok")}, nil
	}))
	s.Register(service, "fail", client.HandlerFunc(func(ctx context.Context, _ *client.Call) (*client.Response, error) {
		return nil, client.Errorf(frame.ErrCodeUnexpected, "failing on purpose")
	}))
	if err := s.Advertise(context.Background(), addr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(context.Background()) })
}

func getJSON(t *testing.T, url string, v any) int {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode == http.StatusOK {
		if err := json.NewDecoder(res.Body).Decode(v); err != nil {
			t.Fatalf("%s: %v", url, err)
		}
	}
	return res.StatusCode
}

// The page is served from meshd itself, with a policy that lets it run
// only its own code.
func TestDashboardPageIsServed(t *testing.T) {
	d := startMeshd(t, "127.0.0.1:0", discovery.NewLocal())
	for _, tc := range []struct{ path, ctype string }{
		{"/ui/", "text/html"}, {"/ui/app.js", "javascript"}, {"/ui/style.css", "text/css"},
	} {
		res, err := http.Get("http://" + d.AdminAddr() + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 200 || !strings.Contains(res.Header.Get("Content-Type"), tc.ctype) ||
			!strings.Contains(res.Header.Get("Content-Security-Policy"), "default-src 'self'") {
			t.Errorf("%s: %s %q %q", tc.path, res.Status, res.Header.Get("Content-Type"), res.Header.Get("Content-Security-Policy"))
		}
	}
	for _, bad := range []string{"/api/v1/services?range=2d", "/api/v1/services?scope=galaxy", "/api/v1/traces?service=x"} {
		res, err := http.Get("http://" + d.AdminAddr() + bad)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode < 400 || len(body) == 0 {
			t.Errorf("%s: %s %q, want a clear refusal", bad, res.Status, body)
		}
	}
	if code := getJSON(t, "http://"+d.AdminAddr()+"/api/v1/services/nosuch", &struct{}{}); code != http.StatusNotFound {
		t.Errorf("an unknown service: %d, want 404", code)
	}
}

// The live tail streams the calls as they end, filtered, each with its
// routing explanation.
func TestLiveTailStreamsFailedCalls(t *testing.T) {
	d := startMeshd(t, "127.0.0.1:0", discovery.NewLocal())
	failing(t, d.Addr(), "svc")
	res, err := http.Get("http://" + d.AdminAddr() + "/api/v1/tail?failed=1&service=svc")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if ct := res.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	c := dialMeshd(t, d.Addr())
	go func() {
		time.Sleep(300 * time.Millisecond) // the stream starts from now
		for range 5 {
			c.Call(context.Background(), "svc", "ok", nil, nil)
		}
		c.Call(context.Background(), "svc", "fail", nil, nil)
	}()
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		var e relay.Explanation
		if err := json.Unmarshal([]byte(data), &e); err != nil {
			t.Fatal(err)
		}
		if e.Service != "svc" || e.Method != "fail" || e.Outcome != "unexpected" || len(e.Attempts) != 1 || e.Attempts[0].Why == "" {
			t.Fatalf("the tail of failed calls sent %+v", e)
		}
		return
	}
	t.Fatal("the stream ended without the failed call")
}

// The dashboard reads a service's slowest and failed traces from the trace
// backend's query API (here a Zipkin API), meshd's decisions on each hop.
func TestDashboardReadsTracesFromZipkin(t *testing.T) {
	sink := zipkintest.New(t)
	tr, err := tracing.New(tracing.Config{ZipkinURL: sink.URL, SampleRate: 1, ServiceName: "meshd"})
	if err != nil {
		t.Fatal(err)
	}
	d := startWith(t, meshd.Config{Listen: "127.0.0.1:0", Admin: "127.0.0.1:0", Registry: discovery.NewLocal(), Logger: testkit.Quiet, Tracer: tr,
		Traces: &dashboard.Traces{Backend: tracequery.Backend{API: tracequery.Zipkin, URL: sink.QueryURL()}, Service: "meshd"}})
	failing(t, d.Addr(), "svc")
	c := dialMeshd(t, d.Addr())
	for range 3 {
		c.Call(context.Background(), "svc", "ok", nil, nil)
	}
	c.Call(context.Background(), "svc", "fail", nil, nil)
	var found dashboard.Found
	testkit.WaitFor(t, 5*time.Second, "traces of svc", func() bool {
		return getJSON(t, "http://"+d.AdminAddr()+"/api/v1/traces?service=svc", &found) == 200 && len(found.Slowest) == 4 && len(found.Failed) == 1
	})
	f := found.Failed[0]
	if len(f.Spans) == 0 || f.Spans[0].Name != "fail" || f.Spans[0].Tags["mesh.decision"] == "" || !f.Error || !strings.HasSuffix(f.Link, "/zipkin/traces/"+f.ID) {
		t.Fatalf("the failed trace: %+v", f)
	}
	if getJSON(t, "http://"+d.AdminAddr()+"/api/v1/traces?service=svc&method=ok", &found) != 200 || len(found.Slowest) != 3 || len(found.Failed) != 0 {
		t.Fatalf("traces of svc::ok: %d slowest, %d failed", len(found.Slowest), len(found.Failed))
	}
}

// A call an L7 intention denies leaves a span from the refusing meshd that
// names the permission.
func TestMethodDenialSpanNamesThePermission(t *testing.T) {
	sink := zipkintest.New(t)
	tr, err := tracing.New(tracing.Config{ZipkinURL: sink.URL, SampleRate: 1, ServiceName: "meshd"})
	if err != nil {
		t.Fatal(err)
	}
	rules, err := intentions.Compile([]intentions.Rule{{Source: "web", Destination: "KV", Permissions: []intentions.Permission{
		{Action: "deny", HTTP: &intentions.HTTPMatch{PathExact: "/KV::put"}},
		{Action: "allow", HTTP: &intentions.HTTPMatch{PathPrefix: "/KV::"}},
	}}}, false, false)
	if err != nil {
		t.Fatal(err)
	}
	d := startWith(t, meshd.Config{Listen: "127.0.0.1:0", Admin: "127.0.0.1:0", Registry: discovery.NewLocal(), Logger: testkit.Quiet,
		Tracer: tr, Intentions: intentions.NewTable(rules)})
	echoServer(t, d.Addr(), "KV")
	web := dialAs(t, d.Addr(), "web")
	if _, err := web.Call(context.Background(), "KV", "KV::put", nil, nil); err == nil {
		t.Fatal("KV::put was let through")
	}
	const rule = "intention web => KV, permission 1 (deny path_exact /KV::put)"
	testkit.WaitFor(t, 5*time.Second, "the refusing hop's span", func() bool {
		return len(sink.Spans(func(s zipkintest.Span) bool {
			return s.Tags["mesh.refused_by"] == "authorize" && strings.Contains(s.Tags["mesh.result"], rule) && strings.EqualFold(s.Name, "KV::put") // Zipkin lowercases names
		})) == 1
	})
}
