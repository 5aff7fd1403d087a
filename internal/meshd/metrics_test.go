package meshd_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/meshrpc/mesh/client"
	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/dashboard"
	"github.com/meshrpc/mesh/internal/intentions"
	"github.com/meshrpc/mesh/internal/meshd"
	"github.com/meshrpc/mesh/internal/testkit"
	"github.com/meshrpc/mesh/internal/tracing"
	"github.com/meshrpc/mesh/internal/zipkintest"
	"github.com/meshrpc/mesh/router"
)

// scrape reads a meshd's /metrics as its families, by name.
func scrape(t testing.TB, admin string) map[string]*dto.MetricFamily {
	t.Helper()
	res, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(res.Body)
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	return mfs
}

// samples sums the values of family name by the labels keys, joined by " ".
func samples(mfs map[string]*dto.MetricFamily, name string, keys ...string) map[string]float64 {
	out := map[string]float64{}
	mf := mfs[name]
	if mf == nil {
		return out
	}
	for _, m := range mf.Metric {
		l := map[string]string{}
		for _, p := range m.Label {
			l[p.GetName()] = p.GetValue()
		}
		var k []string
		for _, key := range keys {
			k = append(k, l[key])
		}
		v := m.GetCounter().GetValue() + m.GetGauge().GetValue() + float64(m.GetHistogram().GetSampleCount())
		out[strings.Join(k, " ")] += v
	}
	return out
}

// Every call from an app is counted once, at its caller's meshd, on its
// caller → service → method edge, with one result for answers and for
// refusals by the stage that refused: here and at the meshd where the
// instance is (whose intentions deny orders). The destination's meshd
// counts none of them again.
func TestCallsAreCountedOncePerEdgeByCause(t *testing.T) {
	reg := discovery.NewLocal()
	allowAll, _ := intentions.Compile(nil, true, true)
	rules, err := intentions.Compile([]intentions.Rule{
		{Source: "orders", Destination: "payments", Action: "deny"},
		{Source: "*", Destination: "payments", Action: "allow"},
	}, false, false)
	if err != nil {
		t.Fatal(err)
	}
	a := startWith(t, meshd.Config{Listen: "127.0.0.1:0", PeerListen: "127.0.0.1:0", Trust: meshdTrust(t), Admin: "127.0.0.1:0",
		Registry: reg, Logger: testkit.Quiet, Intentions: intentions.NewTable(allowAll),
		Policies: router.Policies{"payments": {MaxAttempts: 1, Blocked: []string{"blocked"}}}})
	b := startWith(t, meshd.Config{Listen: "127.0.0.2:0", PeerListen: "127.0.0.2:0", Trust: meshdTrust(t), Admin: "127.0.0.1:0",
		Registry: reg, Logger: testkit.Quiet, Intentions: intentions.NewTable(rules)})
	srv := client.NewServer(client.Options{ServiceName: "payments", Logger: testkit.Quiet})
	srv.Register("payments", "charge", client.HandlerFunc(func(ctx context.Context, call *client.Call) (*client.Response, error) {
		return &client.Response{Body: []byte("charged")}, nil
	}))
	srv.Register("payments", "refund", client.HandlerFunc(func(ctx context.Context, call *client.Call) (*client.Response, error) {
		return nil, &client.ApplicationError{Body: []byte("no such charge")}
	}))
	srv.Register("payments", "audit", client.HandlerFunc(func(ctx context.Context, call *client.Call) (*client.Response, error) {
		return nil, client.Errorf(frame.ErrCodeBusy, "try later")
	}))
	if err := srv.Advertise(context.Background(), b.Addr()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(context.Background()) })

	web, orders, blocked := dialAs(t, a.Addr(), "web"), dialAs(t, a.Addr(), "orders"), dialAs(t, a.Addr(), "blocked")
	anon := dialMeshd(t, a.Addr())
	calls := []struct {
		c               *client.Client
		service, method string
		n               int
		want            string // the edge and result counted
	}{
		{web, "payments", "charge", 5, "web payments charge ok"},
		{web, "payments", "refund", 3, "web payments refund app_error"},
		{web, "payments", "audit", 2, "web payments audit busy"},
		{orders, "payments", "charge", 4, "orders payments charge refused_authorize"}, // at b
		{blocked, "payments", "charge", 2, "blocked payments charge refused_kill_switch"},
		{web, "nosuch", "x", 3, "web _unknown _unknown refused_discover"},
		{anon, "payments", "charge", 1, "anonymous payments charge refused_authorize"}, // no intention names anonymous
	}
	want := map[string]float64{}
	for _, c := range calls {
		for range c.n {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := c.c.Call(ctx, c.service, c.method, nil, nil)
			cancel()
			var ae *client.ApplicationError
			if strings.HasSuffix(c.want, " ok") != (err == nil) || strings.HasSuffix(c.want, "app_error") != errors.As(err, &ae) {
				t.Fatalf("%s::%s: %v, want %s", c.service, c.method, err, c.want)
			}
		}
		want[c.want] += float64(c.n)
	}
	var got map[string]float64
	testkit.WaitFor(t, 2*time.Second, "every call counted", func() bool {
		got = samples(scrape(t, a.AdminAddr()), "mesh_calls_total", "caller", "service", "method", "result")
		return maps.Equal(got, want)
	})
	mfs := scrape(t, a.AdminAddr())
	byEdge := samples(mfs, "mesh_call_duration_seconds", "caller", "service", "method")
	for k, n := range want {
		edge := strings.Join(strings.Fields(k)[:3], " ")
		if byEdge[edge] < n {
			t.Errorf("latency of %s counts %v calls, want at least %v", edge, byEdge[edge], n)
		}
	}
	if got := samples(scrape(t, b.AdminAddr()), "mesh_calls_total", "caller"); len(got) != 0 {
		t.Errorf("the destination's meshd counted calls again: %v", got)
	}
	if got := samples(scrape(t, b.AdminAddr()), "mesh_stage_refusals_total", "stage", "service"); got["authorize payments"] != 5 {
		t.Errorf("the destination counted its refusals as %v, want authorize payments: 5 (orders, anonymous)", got)
	}
	t.Logf("counted at the caller's meshd: %v", slices.Sorted(maps.Keys(got)))
}

// The labels a meshd writes never clash with Prometheus's target labels,
// and the standard collectors are there.
func TestMetricsHaveNoTargetLabels(t *testing.T) {
	d := startMeshd(t, "127.0.0.1:0", discovery.NewLocal())
	echoServer(t, d.Addr(), "svc")
	if _, err := callEcho(dialMeshd(t, d.Addr()), "svc", nil); err != nil {
		t.Fatal(err)
	}
	var mfs map[string]*dto.MetricFamily
	testkit.WaitFor(t, 5*time.Second, "the call counted", func() bool { // when the relay ends it, after the answer
		mfs = scrape(t, d.AdminAddr())
		return mfs["mesh_calls_total"] != nil && mfs["mesh_instance_attempts_total"] != nil
	})
	for _, name := range []string{"go_goroutines", "process_cpu_seconds_total", "mesh_build_info", "mesh_calls_total", "mesh_instance_attempts_total", "mesh_breaker_state"} {
		if mfs[name] == nil {
			t.Errorf("no %s", name)
		}
	}
	for name, mf := range mfs {
		for _, m := range mf.Metric {
			for _, l := range m.Label {
				if l.GetName() == "instance" || l.GetName() == "job" {
					t.Errorf("%s has a %q label, which a scrape renames", name, l.GetName())
				}
			}
		}
	}
}

// An instance that left is forgotten: its series go after ForgetAfter,
// while its service's others stay.
func TestDepartedInstancesLeaveNoSeries(t *testing.T) {
	d := startWith(t, meshd.Config{Listen: "127.0.0.1:0", Admin: "127.0.0.1:0", Registry: discovery.NewLocal(), Logger: testkit.Quiet,
		ForgetAfter: 400 * time.Millisecond})
	echoServer(t, d.Addr(), "svc")
	goes := echoServer(t, d.Addr(), "svc")
	c := dialMeshd(t, d.Addr())
	instances := func() map[string]float64 {
		return samples(scrape(t, d.AdminAddr()), "mesh_instance_attempt_duration_seconds", "instance_id")
	}
	testkit.WaitFor(t, 5*time.Second, "both instances called", func() bool {
		callEcho(c, "svc", nil)
		return len(instances()) == 2
	})
	goes.Shutdown(context.Background())
	took := testkit.WaitFor(t, 5*time.Second, "the departed instance's series gone", func() bool {
		if _, err := callEcho(c, "svc", nil); err != nil {
			t.Fatal(err)
		}
		return len(instances()) == 1
	})
	t.Logf("series of the departed instance gone %v after it left (ForgetAfter 400ms)", took.Round(10*time.Millisecond))
	if got := instances(); len(got) != 1 {
		t.Fatalf("instances with series: %v", got)
	}
}

// Any meshd shows the whole mesh: the meshds that deliver nothing too (a
// host of callers only), each registered as an instance of meshd.
func TestEveryMeshdIsInTheWholeMeshView(t *testing.T) {
	reg := discovery.NewLocal()
	a := startWith(t, meshd.Config{Listen: "127.0.0.1:0", PeerListen: "127.0.0.1:0", Trust: meshdTrust(t), Admin: "127.0.0.1:0", Registry: reg, Logger: testkit.Quiet})
	b := startWith(t, meshd.Config{Listen: "127.0.0.2:0", PeerListen: "127.0.0.2:0", Trust: meshdTrust(t), Admin: "127.0.0.1:0", Registry: reg, Logger: testkit.Quiet})
	echoServer(t, b.Addr(), "svc")
	web := dialAs(t, a.Addr(), "web")
	for range 5 {
		if _, err := callEcho(web, "svc", nil); err != nil {
			t.Fatal(err)
		}
	}
	var v dashboard.ServicesView
	res, err := http.Get("http://" + b.AdminAddr() + "/api/v1/services?range=1m")
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(res.Body).Decode(&v)
	res.Body.Close()
	if len(v.Meshds) != 2 {
		t.Fatalf("b's whole-mesh view has meshds %+v, want a and b", v.Meshds)
	}
}

// A meshd that does not answer is marked in the whole-mesh view, and the
// others' figures still come.
func TestASilentMeshdIsMarked(t *testing.T) {
	reg := discovery.NewLocal()
	d := startWith(t, meshd.Config{Listen: "127.0.0.1:0", PeerListen: "127.0.0.1:0", Trust: meshdTrust(t), Admin: "127.0.0.1:0", Registry: reg, Logger: testkit.Quiet})
	l, err := net.Listen("tcp", "127.0.0.9:0") // a port no one listens on once closed
	if err != nil {
		t.Fatal(err)
	}
	gone := l.Addr().String()
	l.Close()
	reg.Register(context.Background(), discovery.Instance{Service: "meshd", ID: "meshd@" + gone, Addr: gone})
	echoServer(t, d.Addr(), "svc")
	var v dashboard.ServicesView
	res, err := http.Get("http://" + d.AdminAddr() + "/api/v1/services")
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(res.Body).Decode(&v)
	res.Body.Close()
	var silent *dashboard.MeshdState
	for i := range v.Meshds {
		if v.Meshds[i].Meshd == gone {
			silent = &v.Meshds[i]
		}
	}
	if silent == nil || silent.OK || silent.Error == "" || len(v.Services) == 0 {
		t.Fatalf("meshds %+v, %d services: want %s marked with why, and the services of those that answered", v.Meshds, len(v.Services), gone)
	}
}

// Prometheus asks for OpenMetrics, and gets the trace id of sampled calls
// as exemplars of the calls' latency.
func TestOpenMetricsCarriesExemplars(t *testing.T) {
	sink := zipkintest.New(t)
	tr, err := tracing.New(tracing.Config{ZipkinURL: sink.URL, SampleRate: 1, ServiceName: "meshd"})
	if err != nil {
		t.Fatal(err)
	}
	d := startMeshd(t, "127.0.0.1:0", discovery.NewLocal(), tr)
	echoServer(t, d.Addr(), "svc")
	if _, err := callEcho(dialMeshd(t, d.Addr()), "svc", nil); err != nil {
		t.Fatal(err)
	}
	// The call is counted when the relay ends it, a moment after its answer
	// has gone to the caller: read until it is there.
	var body []byte
	testkit.WaitFor(t, 5*time.Second, "the call and its attempt counted with their exemplars", func() bool {
		req, _ := http.NewRequest("GET", "http://"+d.AdminAddr()+"/metrics", nil)
		req.Header.Set("Accept", "application/openmetrics-text;version=1.0.0")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ = io.ReadAll(res.Body)
		res.Body.Close()
		if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/openmetrics-text") {
			t.Fatalf("content type %q", ct)
		}
		// The call's and its attempt's exemplars are recorded by two
		// stages, one after the other: wait for both.
		seen := map[string]bool{}
		for _, l := range strings.Split(string(body), "\n") {
			for _, family := range []string{"mesh_call_duration_seconds_bucket{", "mesh_instance_attempt_duration_seconds_bucket{"} {
				if strings.HasPrefix(l, family) && strings.Contains(l, `# {trace_id="`) {
					seen[family] = true
				}
			}
		}
		return len(seen) == 2
	})
	exemplar := func(family string) string {
		for _, l := range strings.Split(string(body), "\n") {
			if strings.HasPrefix(l, family+"_bucket{") && strings.Contains(l, `# {trace_id="`) {
				return l[strings.Index(l, `trace_id="`)+len(`trace_id="`):][:16]
			}
		}
		t.Fatalf("no exemplar on %s", family)
		return ""
	}
	id := exemplar("mesh_call_duration_seconds")
	if inst := exemplar("mesh_instance_attempt_duration_seconds"); inst != id {
		t.Fatalf("the attempt's exemplar is trace %s, the call's %s", inst, id)
	}
	testkit.WaitFor(t, 5*time.Second, "the exemplar's trace "+id+" at the trace backend", func() bool {
		return len(sink.Spans(func(s zipkintest.Span) bool { return s.TraceID == id })) > 0
	})
	if !strings.HasSuffix(strings.TrimSpace(string(body)), "# EOF") {
		t.Error("the OpenMetrics exposition does not end with # EOF")
	}
}

// With the ops view off, calls go as before and are not counted per edge;
// the per-instance series, /calls and the rest of /metrics stay, and the
// dashboard says it is off.
func TestOpsViewOff(t *testing.T) {
	d := startWith(t, meshd.Config{Listen: "127.0.0.1:0", Admin: "127.0.0.1:0", Registry: discovery.NewLocal(), Logger: testkit.Quiet,
		NoOpsView: true})
	echoServer(t, d.Addr(), "svc")
	c := dialMeshd(t, d.Addr())
	for range 10 {
		if _, err := callEcho(c, "svc", nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := callEcho(c, "nosuch", nil); err == nil {
		t.Fatal("a call to no service was answered")
	}
	// A call is counted when the relay ends it, a moment after its answer
	// has gone to the caller: read until the tenth is.
	var mfs map[string]*dto.MetricFamily
	testkit.WaitFor(t, 5*time.Second, "the ten attempts counted", func() bool {
		mfs = scrape(t, d.AdminAddr())
		return samples(mfs, "mesh_instance_attempts_total", "service")["svc"] == 10
	})
	if got := samples(mfs, "mesh_calls_total"); len(got) != 0 {
		t.Errorf("mesh_calls_total with the ops view off: %v", got)
	}
	for path, want := range map[string]int{"/": 404, "/api/v1/services": 404, "/calls": 200, "/status": 200} {
		res, err := http.Get("http://" + d.AdminAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != want {
			t.Errorf("GET %s: %d, want %d", path, res.StatusCode, want)
		}
		if want == 404 && !strings.Contains(string(body), "--ops-view") {
			t.Errorf("GET %s says %q, not how to turn the ops view on", path, body)
		}
	}
}
