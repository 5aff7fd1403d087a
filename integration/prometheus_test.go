//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/meshrpc/mesh/client"
	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/golden"
	"github.com/meshrpc/mesh/internal/loadgen"
	"github.com/meshrpc/mesh/internal/testconsul"
	"github.com/meshrpc/mesh/internal/testkit"
)

// promBinary is the path of one of Debian's prometheus package programs
// (prometheus, promtool), which scripts/test.sh installs.
func promBinary(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found (scripts/test.sh installs Debian's prometheus package): %v", name, err)
	}
	return p
}

// lowPort is a free port on ip below Linux's ephemeral range (32768 up),
// where no outgoing connection can take it meanwhile.
func lowPort(t testing.TB, ip string) int {
	t.Helper()
	for range 100 {
		p := 20000 + rand.IntN(12000)
		if l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(p))); err == nil {
			l.Close()
			return p
		}
	}
	t.Fatal("no free port below 32768")
	return 0
}

// promServer is a throwaway Prometheus server that scrapes meshds every
// second.
type promServer struct{ url string }

func startPrometheus(t *testing.T, targets ...string) *promServer {
	t.Helper()
	dir := t.TempDir()
	quoted := make([]string, len(targets))
	for i, tg := range targets {
		quoted[i] = strconv.Quote(tg)
	}
	config := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: meshd
    static_configs:
      - targets: [%s]
`, strings.Join(quoted, ", "))
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(lowPort(t, "127.0.0.1")))
	logf, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(promBinary(t, "prometheus"), "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr, "--enable-feature=exemplar-storage")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("--- log of prometheus:\n%s", lastLines(b, 20))
		}
	})
	p := &promServer{url: "http://" + addr}
	testkit.WaitFor(t, 20*time.Second, "prometheus ready", func() bool {
		res, err := http.Get(p.url + "/-/ready")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == 200
	})
	return p
}

// promSample is one series of an instant query's answer.
type promSample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

func (s promSample) value() float64 {
	v, _ := strconv.ParseFloat(fmt.Sprint(s.Value[1]), 64)
	return v
}

// key joins the sample's values of labels.
func (s promSample) key(labels ...string) string {
	var k []string
	for _, l := range labels {
		k = append(k, s.Metric[l])
	}
	return strings.Join(k, " ")
}

// query runs an instant PromQL query at time at.
func (p *promServer) query(t *testing.T, expr string, at time.Time) []promSample {
	t.Helper()
	q := url.Values{"query": {expr}, "time": {strconv.FormatFloat(float64(at.UnixMilli())/1000, 'f', 3, 64)}}
	res, err := http.Get(p.url + "/api/v1/query?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var out struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []promSample `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil || out.Status != "success" {
		t.Fatalf("query %s: %v %s", expr, err, out.Error)
	}
	return out.Data.Result
}

// byKey is a query's answer as values by the labels' values.
func (p *promServer) byKey(t *testing.T, expr string, at time.Time, labels ...string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, s := range p.query(t, expr, at) {
		out[s.key(labels...)] = s.value()
	}
	return out
}

// bucketOf is the index of the latency bucket holding seconds.
func bucketOf(seconds float64) int {
	for i, le := range golden.Buckets {
		if seconds <= le {
			return i
		}
	}
	return len(golden.Buckets)
}

// A real Prometheus scrapes two meshds while two callers make a known mix
// of calls to two services: answers, application errors, failures, timeouts
// and refusals, on the caller's meshd and across hosts. What PromQL says of
// each edge (calls by result, calls per second, success rate, p99) agrees
// with what the load generator counted; an instance's series go when it
// leaves; the exposition passes promtool's lint.
func TestPrometheusSeesWhatTheLoadDid(t *testing.T) {
	agent := testconsul.Start(t)
	capi := consulAPI(t, agent.HTTPAddr)
	for svc, policy := range map[string]string{
		"catalog": `{"max_attempts": 1, "blocked": ["orders"], "breaker_failures": 100000, "breaker_ratio": 1}`,
		"pricing": `{"max_attempts": 1, "try_timeout": "100ms", "breaker_failures": 100000, "breaker_ratio": 1}`,
	} {
		if _, err := capi.KV().Put(&api.KVPair{Key: "mesh/policies/" + svc, Value: []byte(policy)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	a := startHost(t, "127.0.0.1", agent.HTTPAddr, "--forget-after", "3s")
	b := startHost(t, "127.0.0.2", agent.HTTPAddr, "--forget-after", "3s")

	// catalog: one instance on each host; pricing on b.
	serve := func(h *host, service string, methods map[string]client.HandlerFunc) *client.Server {
		s := client.NewServer(client.Options{ServiceName: service, Logger: testkit.Quiet})
		for m, f := range methods {
			s.Register(service, m, f)
		}
		if err := s.Advertise(context.Background(), h.addr); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Shutdown(context.Background()) })
		return s
	}
	// Handlers take 5 to 25 ms, so the latency is the service's, not the
	// test process's own scheduling (which the caller's figures include and
	// meshd's cannot).
	work := func() { time.Sleep(time.Duration(5+rand.IntN(20)) * time.Millisecond) }
	ok := func(ctx context.Context, _ *client.Call) (*client.Response, error) {
		work()
		return &client.Response{Body: []byte("ok")}, nil
	}
	catalog := func() map[string]client.HandlerFunc {
		var n atomic.Int64
		return map[string]client.HandlerFunc{
			"get": ok,
			"miss": func(context.Context, *client.Call) (*client.Response, error) {
				work()
				return nil, &client.ApplicationError{Body: []byte("no such item")}
			},
			"flaky": func(context.Context, *client.Call) (*client.Response, error) { // every 4th call fails
				work()
				if n.Add(1)%4 == 0 {
					return nil, client.Errorf(frame.ErrCodeUnexpected, "flaky on purpose")
				}
				return &client.Response{Body: []byte("ok")}, nil
			},
		}
	}
	serve(a, "catalog", catalog())
	second := serve(b, "catalog", catalog())
	serve(b, "pricing", map[string]client.HandlerFunc{
		"quote": func(ctx context.Context, _ *client.Call) (*client.Response, error) {
			time.Sleep(time.Duration(2+rand.IntN(18)) * time.Millisecond)
			return &client.Response{Body: []byte("12.50")}, nil
		},
		"slow": func(ctx context.Context, _ *client.Call) (*client.Response, error) {
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			return &client.Response{Body: []byte("late")}, nil
		},
	})
	caller := func(h *host, name string) *client.Client {
		c, err := client.Dial(context.Background(), h.addr, client.Options{ServiceName: name, Logger: testkit.Quiet})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if c.Identity() != name {
			t.Fatalf("caller %s proved %q", name, c.Identity())
		}
		return c
	}
	web, orders := caller(a, "web"), caller(b, "orders")
	for _, h := range []*host{a, b} {
		testkit.WaitFor(t, 10*time.Second, "catalog and pricing visible", func() bool { return seesServices(t, h, "catalog", "pricing") })
	}
	prom := startPrometheus(t, a.admin, b.admin)

	// What each result is called by the load generator: the result label
	// the call should be counted under.
	classify := func(err error) string {
		var ae *client.ApplicationError
		var ce *client.Error
		switch {
		case errors.As(err, &ae):
			return "app_error"
		case errors.As(err, &ce) && strings.Contains(ce.Message, "kill switch"):
			return "refused_kill_switch"
		case errors.As(err, &ce):
			return strings.ReplaceAll(strings.ToLower(ce.Code.String()), " ", "_")
		}
		return "error: " + err.Error()
	}
	edges := []struct {
		c                       *client.Client
		caller, service, method string
		rps                     float64
		refused                 bool
	}{
		{web, "web", "catalog", "get", 40, false},
		{web, "web", "catalog", "miss", 20, false},
		{web, "web", "catalog", "flaky", 40, false},
		{web, "web", "pricing", "quote", 40, false}, // across hosts
		{orders, "orders", "pricing", "quote", 40, false},
		{orders, "orders", "pricing", "slow", 10, false},
		{orders, "orders", "catalog", "get", 20, true}, // the kill switch
	}
	const run = 20 * time.Second
	began := time.Now()
	loads := make([]*loadgen.Load, len(edges))
	for i, e := range edges {
		loads[i] = loadgen.Start(context.Background(), loadgen.Config{Duration: run, Concurrency: 64, RPS: e.rps, Classify: classify},
			func(ctx context.Context) error {
				ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				defer cancel()
				_, err := e.c.Call(ctx, e.service, e.method, nil, nil)
				return err
			})
	}
	results := make([]*loadgen.Result, len(edges))
	for i, l := range loads {
		results[i] = l.Wait()
	}
	ended := time.Now()
	time.Sleep(3 * time.Second) // the last scrapes

	// Calls by result: exactly what the load generator made.
	want := map[string]float64{}
	for i, e := range edges {
		r := results[i]
		edge := e.caller + " " + e.service + " " + e.method
		if n := r.Calls - r.Errors; n > 0 {
			want[edge+" ok"] += float64(n)
		}
		for class, n := range r.ErrorsBy {
			want[edge+" "+class] += float64(n)
		}
	}
	got := prom.byKey(t, `sum by (caller, service, method, result) (mesh_calls_total)`, time.Now(), "caller", "service", "method", "result")
	for k, n := range want {
		if got[k] != n {
			t.Errorf("mesh_calls_total{%s}: Prometheus has %v, the load made %v", k, got[k], n)
		}
	}
	for k, n := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("mesh_calls_total{%s} = %v: no such calls were made", k, n)
		}
	}
	for _, res := range []string{"app_error", "unexpected", "timeout", "refused_kill_switch"} {
		if !slices.ContainsFunc(slices.Collect(maps.Keys(want)), func(k string) bool { return strings.HasSuffix(k, " "+res) }) {
			t.Errorf("the load made no %s: the mix is not what this test means", res)
		}
	}

	// Calls per second and success rate per edge, over the middle of the
	// run, and p99 over all of it.
	mid := began.Add(run * 3 / 4)
	rps := prom.byKey(t, `sum by (caller, service, method) (rate(mesh_calls_total[10s]))`, mid, "caller", "service", "method")
	success := prom.byKey(t, `sum by (caller, service, method) (rate(mesh_calls_total{result=~"ok|app_error"}[10s])) / sum by (caller, service, method) (rate(mesh_calls_total[10s]))`, mid, "caller", "service", "method")
	window := fmt.Sprintf("%ds", int(ended.Sub(began).Seconds())+1)
	p99 := prom.byKey(t, `histogram_quantile(0.99, sum by (caller, service, method, le) (rate(mesh_call_duration_seconds_bucket[`+window+`])))`, ended.Add(time.Second), "caller", "service", "method")
	for i, e := range edges {
		edge := e.caller + " " + e.service + " " + e.method
		r := results[i]
		answered := float64(r.Calls-r.Errors+r.ErrorsBy["app_error"]) / float64(r.Calls)
		loadP99 := r.Latency.P99 / 1000
		t.Logf("%-28s load: %6.1f calls/s, %5.1f%% answered, p99 %6.2fms | PromQL: %6.1f calls/s, %5.1f%% answered, p99 %6.2fms",
			edge, r.Throughput, 100*answered, 1000*loadP99, rps[edge], 100*success[edge], 1000*p99[edge])
		if d := math.Abs(rps[edge]-e.rps) / e.rps; d > 0.05 {
			t.Errorf("%s: PromQL says %.1f calls/s, the load made %.0f", edge, rps[edge], e.rps)
		}
		if d := math.Abs(success[edge] - answered); d > 0.05 {
			t.Errorf("%s: PromQL says %.1f%% answered, the load saw %.1f%%", edge, 100*success[edge], 100*answered)
		}
		if e.refused { // the load measures only the caller's own overhead there; meshd's refusal takes ~0.1 ms
			continue
		}
		if d := bucketOf(p99[edge]) - bucketOf(loadP99); d < -1 || d > 1 {
			t.Errorf("%s: PromQL's p99 %.2fms and the load's %.2fms are %d buckets apart", edge, 1000*p99[edge], 1000*loadP99, d)
		}
	}

	// Every expression of the Grafana dashboard runs and finds series.
	checkGrafana(t, prom, ended)

	// promtool lints what meshd writes.
	check := exec.Command(promBinary(t, "promtool"), "check", "metrics")
	check.Stdin = strings.NewReader(metricsOfAddr(t, a.admin))
	if out, err := check.CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}

	// An instance that leaves takes its series with it, on every meshd that
	// called it, while its service's other instance keeps its own.
	instances := func() map[string]float64 {
		return prom.byKey(t, `count by (instance_addr) (mesh_instance_attempts_total{service="catalog"})`, time.Now(), "instance_addr")
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() { // calls go on, to the instance that stays
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				web.Call(ctx, "catalog", "get", nil, nil)
				cancel()
			}
		}
	}()
	testkit.WaitFor(t, 15*time.Second, "both catalog instances called, as Prometheus sees it", func() bool {
		return len(prom.byKey(t, `count by (instance_addr) (rate(mesh_instance_attempts_total{service="catalog"}[3s]) > 0)`, time.Now(), "instance_addr")) == 2
	})
	second.Shutdown(context.Background())
	took := testkit.WaitFor(t, 20*time.Second, "the departed instance's series gone from Prometheus", func() bool {
		now := instances()
		return len(now) == 1 && now[b.peer] == 0
	})
	t.Logf("catalog's instance on %s: its series gone from Prometheus %v after it left (--forget-after 3s); the other's stay: %v", b.peer, took.Round(100*time.Millisecond), instances())
}

// deploy/prometheus is what an operator copies: its config and rules load,
// and the alerts fire (and stay quiet) as their unit tests say.
func TestPrometheusRulesAndConfig(t *testing.T) {
	promtool := promBinary(t, "promtool")
	for _, args := range [][]string{
		{"check", "config", "prometheus.yml"},
		{"check", "rules", "mesh-rules.yml"},
		{"test", "rules", "mesh-rules_test.yml"},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = "../deploy/prometheus"
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// checkGrafana runs every PromQL expression of deploy/grafana/mesh.json
// (its variables given a value: every service, a 10 s rate window) against
// prom at time at: each must run and find series.
func checkGrafana(t *testing.T, prom *promServer, at time.Time) {
	t.Helper()
	b, err := os.ReadFile("../deploy/grafana/mesh.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("deploy/grafana/mesh.json: %v", err)
	}
	vars := strings.NewReplacer("$service", ".+", "$__rate_interval", "10s")
	n := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			expr := vars.Replace(tg.Expr)
			if strings.Contains(expr, "$") {
				t.Errorf("panel %q: a variable the test does not know: %s", p.Title, tg.Expr)
				continue
			}
			if got := prom.query(t, expr, at); len(got) == 0 {
				t.Errorf("panel %q: %s finds no series", p.Title, expr)
			}
			n++
		}
	}
	t.Logf("the Grafana dashboard's %d expressions run and find series", n)
}
