//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshrpc/mesh/client"
	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/testconsul"
	"github.com/meshrpc/mesh/internal/testkit"
)

const zipkinURL = "http://127.0.0.1:9411/api/v2/spans"

// startJaeger runs Jaeger v2 (built from the module proxy) on its default
// ports: Zipkin API on 9411, query API on 16686.
func startJaeger(t *testing.T) {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	out, err := exec.Command(filepath.Join(filepath.Dir(file), "..", "scripts", "tool.sh"), "jaeger").Output()
	if err != nil {
		t.Fatalf("building jaeger: %v", err)
	}
	if resp, err := http.Get("http://127.0.0.1:16686/api/services"); err == nil {
		resp.Body.Close()
		t.Fatal("something already listens on 127.0.0.1:16686; stop it (the test runs its own Jaeger)")
	}
	log, _ := os.Create(filepath.Join(t.TempDir(), "jaeger.log"))
	cmd := exec.Command(strings.TrimSpace(string(out)))
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	testkit.WaitFor(t, 30*time.Second, "jaeger up", func() bool {
		resp, err := http.Get("http://127.0.0.1:16686/api/services")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

type jaegerSpan struct {
	SpanID        string `json:"spanID"`
	OperationName string `json:"operationName"`
	References    []struct {
		RefType string `json:"refType"`
		SpanID  string `json:"spanID"`
	} `json:"references"`
	ProcessID string `json:"processID"`
	Tags      []struct {
		Key   string `json:"key"`
		Value any    `json:"value"`
	} `json:"tags"`
	Logs []struct {
		Fields []struct {
			Key   string `json:"key"`
			Value any    `json:"value"`
		} `json:"fields"`
	} `json:"logs"`
}

func (s jaegerSpan) tag(k string) string {
	for _, t := range s.Tags {
		if t.Key == k {
			return fmt.Sprint(t.Value)
		}
	}
	return ""
}

func (s jaegerSpan) parent() string {
	for _, r := range s.References {
		if r.RefType == "CHILD_OF" {
			return r.SpanID
		}
	}
	return ""
}

// fetchTrace returns the spans of one trace, with each span's service name.
func fetchTrace(t *testing.T, traceID string) ([]jaegerSpan, map[string]string) {
	resp, err := http.Get("http://127.0.0.1:16686/api/traces/" + traceID)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Data []struct {
			Spans     []jaegerSpan `json:"spans"`
			Processes map[string]struct {
				ServiceName string `json:"serviceName"`
			} `json:"processes"`
		} `json:"data"`
	}
	json.NewDecoder(resp.Body).Decode(&body)
	if len(body.Data) != 1 {
		return nil, nil
	}
	svc := map[string]string{}
	for _, s := range body.Data[0].Spans {
		svc[s.SpanID] = body.Data[0].Processes[s.ProcessID].ServiceName
	}
	return body.Data[0].Spans, svc
}

// meshctl → meshd A → meshd B → s1, whose handler calls s2 on host C through
// meshd B: one trace, every hop once, parent to child.
func TestOneTraceAcrossTheMesh(t *testing.T) {
	startJaeger(t)
	agent := testconsul.Start(t)
	// Spans reach the backend in both of Zipkin's encodings: proto (the
	// default) from host A, s1 and meshctl, JSON from hosts B and C and s2.
	z := []string{"--zipkin", zipkinURL}
	zjson := []string{"--zipkin", zipkinURL, "--zipkin-encoding", "json"}
	a := startHost(t, "127.0.0.1", agent.HTTPAddr, z...)
	b := startHost(t, "127.0.0.2", agent.HTTPAddr, zjson...)
	c := startHost(t, "127.0.0.3", agent.HTTPAddr, zjson...)

	s2 := client.NewServer(client.Options{ServiceName: "s2", Zipkin: zipkinURL, ZipkinEncoding: "json", Logger: testkit.Quiet})
	s2.Register("s2", "leaf", client.HandlerFunc(func(ctx context.Context, call *client.Call) (*client.Response, error) {
		return &client.Response{Body: append([]byte("leaf:"), call.Body...)}, nil
	}))
	if err := s2.Advertise(context.Background(), c.addr); err != nil {
		t.Fatal(err)
	}
	defer s2.Shutdown(context.Background())
	s1Out, err := client.Dial(context.Background(), b.addr, client.Options{ServiceName: "s1", Zipkin: zipkinURL, Logger: testkit.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer s1Out.Close()
	s1 := client.NewServer(client.Options{ServiceName: "s1", Zipkin: zipkinURL, Logger: testkit.Quiet})
	s1.Register("s1", "front", client.HandlerFunc(func(ctx context.Context, call *client.Call) (*client.Response, error) {
		res, err := s1Out.Call(ctx, "s2", "leaf", nil, call.Body)
		if err != nil {
			return nil, err
		}
		return &client.Response{Body: res.Body}, nil
	}))
	if err := s1.Advertise(context.Background(), b.addr); err != nil {
		t.Fatal(err)
	}
	defer s1.Shutdown(context.Background())
	testkit.WaitFor(t, 10*time.Second, "s1 and s2 visible", func() bool { return seesServices(t, a, "s1") && seesServices(t, b, "s2") })

	out, errOut, code := meshctl(t, "call", "s1", "front", "x", "--raw", "--trace", "--zipkin", zipkinURL, "--via", a.addr)
	if code != 0 || strings.TrimSpace(out) != "leaf:x" {
		t.Fatalf("meshctl: %q %q exit %d", out, errOut, code)
	}
	_, traceID, ok := strings.Cut(errOut, "trace id: ")
	if !ok {
		t.Fatalf("meshctl printed no trace id: %q", errOut)
	}
	traceID = strings.TrimSpace(strings.Split(traceID, "\n")[0])

	want := []string{"meshctl", "meshd", "meshd", "s1", "s1", "meshd", "meshd", "s2"}
	var spans []jaegerSpan
	var svc map[string]string
	testkit.WaitFor(t, 15*time.Second, "all spans in jaeger", func() bool {
		spans, svc = fetchTrace(t, traceID)
		return len(spans) >= len(want)
	})
	if len(spans) != len(want) {
		t.Fatalf("trace has %d spans, want %d", len(spans), len(want))
	}
	// Walk from the root: each span has exactly one child, in the order above.
	children := map[string][]jaegerSpan{}
	var root []jaegerSpan
	for _, s := range spans {
		if p := s.parent(); p == "" {
			root = append(root, s)
		} else {
			children[p] = append(children[p], s)
		}
	}
	if len(root) != 1 {
		t.Fatalf("%d root spans, want 1", len(root))
	}
	var chain []string
	for s := root[0]; ; {
		chain = append(chain, fmt.Sprintf("%s/%s(%s)", svc[s.SpanID], s.OperationName, s.tag("span.kind")))
		kids := children[s.SpanID]
		if len(kids) == 0 {
			break
		}
		if len(kids) > 1 {
			t.Fatalf("span %s has %d children", s.OperationName, len(kids))
		}
		s = kids[0]
	}
	t.Logf("trace %s: %s", traceID, strings.Join(chain, " → "))
	var gotServices []string
	for _, c := range chain {
		gotServices = append(gotServices, c[:strings.IndexByte(c, '/')])
	}
	if !slices.Equal(gotServices, want) {
		t.Fatalf("services along the trace = %v, want %v", gotServices, want)
	}
	for _, s := range spans {
		if svc[s.SpanID] == "meshd" && s.tag("mesh.service") == "" {
			t.Fatalf("meshd span %s lacks its routing tags", s.OperationName)
		}
	}
	// meshctl draws the same tree from Jaeger's API.
	drawn, errOut, code := meshctl(t, "trace", traceID, "--traces", "http://127.0.0.1:16686")
	if code != 0 {
		t.Fatalf("meshctl trace: %s", errOut)
	}
	t.Logf("meshctl trace:\n%s", drawn)
	for depth, svc := range want {
		if !strings.Contains(drawn, strings.Repeat("  ", depth)+svc+" ") {
			t.Fatalf("meshctl trace does not show %s at depth %d", svc, depth)
		}
	}
	if !strings.Contains(drawn, "mesh.decision: power of two choices") {
		t.Fatal("meshctl trace does not show the routing decision")
	}
}

// A call retried after a busy instance shows both attempts and the cause in
// its meshd span; with the trace backend down or hung, calls go on as
// without tracing, nothing leaks, and the spans that could not be sent are
// counted on /metrics.
func TestTraceOfRetryAndBackendDown(t *testing.T) {
	startJaeger(t)
	a := startHost(t, "127.0.0.1", "off", "--zipkin", zipkinURL)
	busy := faultyInstance(t, a.addr, "flaky", "busy")
	busy.code.Store(int32(3)) // busy
	faultyInstance(t, a.addr, "flaky", "fine").delay.Store(0)
	testkit.WaitFor(t, 5*time.Second, "flaky visible", func() bool { return seesServices(t, a, "flaky") })

	c, err := client.Dial(context.Background(), a.addr, client.Options{ServiceName: "tester", Zipkin: zipkinURL, Logger: testkit.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	var retried string
	for range 20 { // until a call happens to try the busy instance first
		var sent frame.Tracing
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := c.Call(ctx, "flaky", "work", nil, nil, client.ReportTracing(&sent))
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if busy.calls.Load() > 0 {
			retried = client.TraceID(sent)
			break
		}
	}
	c.Close()
	if retried == "" {
		t.Fatal("no call tried the busy instance")
	}
	var hop jaegerSpan
	testkit.WaitFor(t, 15*time.Second, "the retried call's meshd span", func() bool {
		spans, svc := fetchTrace(t, retried)
		for _, s := range spans {
			if svc[s.SpanID] == "meshd" {
				hop = s
				return true
			}
		}
		return false
	})
	var events []string
	for _, l := range hop.Logs {
		var name, cause, result string
		for _, f := range l.Fields {
			switch f.Key {
			case "event":
				name = fmt.Sprint(f.Value)
			case "mesh.cause":
				cause = fmt.Sprint(f.Value)
			case "mesh.result":
				result = fmt.Sprint(f.Value)
			}
		}
		events = append(events, strings.TrimSpace(name+" "+cause+" "+result))
	}
	t.Logf("meshd span of the retried call: attempts=%s, events %v", hop.tag("mesh.attempts"), events)
	joined := strings.Join(events, "; ")
	// Zipkin carries an event's attributes as JSON in its annotation.
	ok := hop.tag("mesh.attempts") == "2" &&
		strings.Contains(joined, `retry: {"mesh.cause":"busy"`) &&
		regexp.MustCompile(`attempt 1: \{[^}]*"mesh.result":"busy"`).MatchString(joined) &&
		regexp.MustCompile(`attempt 2: \{[^}]*"mesh.result":"ok"`).MatchString(joined)
	if !ok {
		t.Fatalf("the span does not show both attempts and the retry's cause: %v", events)
	}

	// The backend goes away, two ways: nothing listens (connections are
	// refused at once), and a backend takes connections and never answers
	// (every export waits out its timeout). Calls through that meshd, every
	// one traced, take what calls through a meshd without tracing take; the
	// meshd keeps no more goroutines; the lost spans are counted.
	ref := startHost(t, "127.0.0.3", "off")
	faultyInstance(t, ref.addr, "quiet", "r").delay.Store(0)
	cref := dial(t, ref.addr)
	for _, down := range []struct{ name, url string }{
		{"refusing", "http://127.0.0.1:1/api/v2/spans"},
		{"never answering", "http://" + silentListener(t) + "/api/v2/spans"},
	} {
		b := startHost(t, "127.0.0.2", "off", "--zipkin", down.url, "--pprof", "on") // goroutinesOf reads its pprof page
		faultyInstance(t, b.addr, "quiet", "q").delay.Store(0)
		testkit.WaitFor(t, 5*time.Second, "quiet visible", func() bool { return seesServices(t, b, "quiet") && seesServices(t, ref, "quiet") })
		cb := dial(t, b.addr)
		call := func(c *client.Client, opts ...client.CallOption) time.Duration {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			begin := time.Now()
			if _, err := c.Call(ctx, "quiet", "work", nil, nil, opts...); err != nil {
				t.Fatalf("trace backend %s: %v", down.name, err)
			}
			return time.Since(begin)
		}
		for range 100 { // warm both up
			call(cb, client.WithTrace())
			call(cref)
		}
		before := goroutinesOf(t, b)
		var traced, untraced []time.Duration
		for range 1000 { // alternating, so both see the same machine
			traced = append(traced, call(cb, client.WithTrace()))
			untraced = append(untraced, call(cref))
		}
		after := goroutinesOf(t, b)
		var dropped string
		testkit.WaitFor(t, 10*time.Second, "dropped spans counted", func() bool {
			for _, line := range strings.Split(metricsOf(t, b), "\n") {
				if v, ok := strings.CutPrefix(line, "mesh_trace_spans_dropped_total "); ok && v != "0" {
					dropped = v
					return true
				}
			}
			return false
		})
		tp50, tp99, tmax := percentiles(traced)
		up50, up99, _ := percentiles(untraced)
		t.Logf("trace backend %s: 1,100 traced calls ok; p50 %v / p99 %v (max %v) against %v / %v without tracing; meshd goroutines %d → %d; %s spans dropped and counted",
			down.name, tp50, tp99, tmax, up50, up99, before, after, dropped)
		// A call that waited for the backend would take seconds (an export's
		// timeout is 5s): the bounds leave room for a busy machine, no more.
		if tmax > time.Second || tp99 > up99+50*time.Millisecond {
			t.Fatalf("trace backend %s: calls slowed down: p99 %v (max %v) against %v without tracing", down.name, tp99, tmax, up99)
		}
		if after > before+10 {
			t.Fatalf("trace backend %s: meshd goroutines grew from %d to %d over 1,000 calls", down.name, before, after)
		}
	}
}

// silentListener accepts connections and reads them, never answering: a
// trace backend that hangs.
func silentListener(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				io.Copy(io.Discard, conn)
			}()
		}
	}()
	return l.Addr().String()
}

// goroutinesOf is how many goroutines a host's meshd runs (its pprof page).
func goroutinesOf(t *testing.T, h *host) int {
	resp, err := http.Get("http://" + h.admin + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var n int
	if _, err := fmt.Fscanf(resp.Body, "goroutine profile: total %d", &n); err != nil {
		t.Fatalf("meshd goroutine profile: %v", err)
	}
	return n
}

// percentiles are the median, 99th percentile and maximum of ds.
func percentiles(ds []time.Duration) (p50, p99, most time.Duration) {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2], s[len(s)*99/100], s[len(s)-1]
}
