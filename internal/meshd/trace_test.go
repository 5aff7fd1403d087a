package meshd_test

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	oteltrace "go.opentelemetry.io/otel/trace"

	"github.com/meshrpc/mesh/client"
	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/meshd"
	"github.com/meshrpc/mesh/internal/testkit"
	"github.com/meshrpc/mesh/internal/tracing"
	"github.com/meshrpc/mesh/internal/zipkintest"
)

// trace returns the spans of trace id, by span id.
func trace(sink *zipkintest.Sink, id string) map[string]zipkintest.Span {
	out := map[string]zipkintest.Span{}
	for _, sp := range sink.Spans(func(sp zipkintest.Span) bool { return sp.TraceID == id }) {
		out[sp.ID] = sp
	}
	return out
}

// Many concurrent traced calls through two meshds, a third of them retried
// off a busy instance (run under -race: a hop's span is touched from the
// caller's and the callee's connections and from retry timers): every
// call's trace is client → first hop → last hop → server, and retried ones
// say so on the first hop.
func TestTracedCallsAcrossTwoMeshds(t *testing.T) {
	sink := zipkintest.New(t)
	newTracer := func() *tracing.Tracer {
		tr, err := tracing.New(tracing.Config{ZipkinURL: sink.URL, SampleRate: 1, ServiceName: "meshd"})
		if err != nil {
			t.Fatal(err)
		}
		return tr
	}
	reg := discovery.NewLocal()
	start := func(addr string) *meshd.Daemon {
		host, _, _ := net.SplitHostPort(addr)
		return startWith(t, meshd.Config{Listen: addr, PeerListen: host + ":0", Trust: meshdTrust(t), Registry: reg, Logger: testkit.Quiet, Tracer: newTracer()})
	}
	a, b := start("127.0.0.1:0"), start("127.0.0.2:0")
	opts := client.Options{ServiceName: "svc", Zipkin: sink.URL, Logger: testkit.Quiet}
	var servers []*client.Server
	for i, code := range []frame.ErrCode{frame.ErrCodeBusy, 0, 0} {
		s := client.NewServer(opts)
		s.Register("svc", "m", client.HandlerFunc(func(ctx context.Context, call *client.Call) (*client.Response, error) {
			if code != 0 {
				return nil, client.Errorf(code, "instance %d is busy", i)
			}
			return &client.Response{Body: []byte("ok")}, nil
		}))
		if err := s.Advertise(context.Background(), b.Addr()); err != nil {
			t.Fatal(err)
		}
		servers = append(servers, s)
	}
	opts.ServiceName = "caller"
	c, err := client.Dial(context.Background(), a.Addr(), opts)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var traces []frame.Tracing
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 25 {
				var sent frame.Tracing
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, err := c.Call(ctx, "svc", "m", nil, nil, client.ReportTracing(&sent))
				cancel()
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				traces = append(traces, sent)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	// Closing flushes each process's spans.
	c.Close()
	for _, s := range servers {
		s.Shutdown(context.Background())
	}
	a.Shutdown(context.Background())
	b.Shutdown(context.Background())
	retried := 0
	for _, tr := range traces {
		id := client.TraceID(tr)
		spans := trace(sink, id)
		cs, ok := spans[id16(tr.SpanID)]
		if !ok || cs.Kind != "CLIENT" || cs.Local.ServiceName != "caller" {
			t.Fatalf("trace %s: no client span %x in %v", id, tr.SpanID, spans)
		}
		first := child(spans, cs.ID)
		if first.Tags["mesh.hop"] != "first" || first.Local.ServiceName != "meshd" {
			t.Fatalf("trace %s: first hop %+v", id, first)
		}
		if first.Tags["mesh.attempts"] == "2" {
			retried++
		}
		last := child(spans, first.ID)
		if last.Tags["mesh.hop"] != "last" {
			t.Fatalf("trace %s: last hop %+v", id, last)
		}
		if srv := child(spans, last.ID); srv.Kind != "SERVER" || srv.Local.ServiceName != "svc" {
			t.Fatalf("trace %s: server span %+v", id, srv)
		}
	}
	if retried == 0 {
		t.Fatal("no call was retried off the busy instance")
	}
	t.Logf("%d traced calls, each client → first hop → last hop → server; %d retried", len(traces), retried)
}

func id16(v uint64) string {
	const hex = "0123456789abcdef"
	b := make([]byte, 16)
	for i := 15; i >= 0; i-- {
		b[i] = hex[v&0xf]
		v >>= 4
	}
	return string(b)
}

func child(spans map[string]zipkintest.Span, parent string) zipkintest.Span {
	for _, s := range spans {
		if s.ParentID == parent {
			return s
		}
	}
	return zipkintest.Span{}
}

// A 128-bit trace (a W3C or OpenTelemetry caller's) stays one trace across
// the mesh: a caller whose context holds such a span calls through two
// meshds a service whose handler calls another; every span recorded, at
// each process, has the whole id, and none went to the trace of its low
// half.
func TestA128BitTraceStaysWhole(t *testing.T) {
	sink := zipkintest.New(t)
	reg := discovery.NewLocal()
	start := func(addr string) *meshd.Daemon {
		tr, err := tracing.New(tracing.Config{ZipkinURL: sink.URL, SampleRate: 0, ServiceName: "meshd"})
		if err != nil {
			t.Fatal(err)
		}
		host, _, _ := net.SplitHostPort(addr)
		return startWith(t, meshd.Config{Listen: addr, PeerListen: host + ":0", Trust: meshdTrust(t), Registry: reg, Logger: testkit.Quiet, Tracer: tr})
	}
	a, b := start("127.0.0.1:0"), start("127.0.0.2:0")
	opts := client.Options{Zipkin: sink.URL, Logger: testkit.Quiet}
	serve := func(via *meshd.Daemon, service string, h client.HandlerFunc) *client.Server {
		o := opts
		o.ServiceName = service
		s := client.NewServer(o)
		s.Register(service, "m", h)
		if err := s.Advertise(context.Background(), via.Addr()); err != nil {
			t.Fatal(err)
		}
		return s
	}
	back := serve(a, "back", func(ctx context.Context, call *client.Call) (*client.Response, error) {
		return &client.Response{Body: []byte("back")}, nil
	})
	o := opts
	o.ServiceName = "front"
	out, err := client.Dial(context.Background(), b.Addr(), o)
	if err != nil {
		t.Fatal(err)
	}
	front := serve(b, "front", func(ctx context.Context, call *client.Call) (*client.Response, error) {
		res, err := out.Call(ctx, "back", "m", nil, nil) // b → a
		if err != nil {
			return nil, err
		}
		return &client.Response{Body: res.Body}, nil
	})
	o.ServiceName = "caller"
	c, err := client.Dial(context.Background(), a.Addr(), o)
	if err != nil {
		t.Fatal(err)
	}
	const traceID = "5b8efff798038103d269b633813fc60c"
	tid, _ := oteltrace.TraceIDFromHex(traceID)
	sid, _ := oteltrace.SpanIDFromHex("eee19b7ec3c1b174")
	ctx := oteltrace.ContextWithRemoteSpanContext(context.Background(),
		oteltrace.NewSpanContext(oteltrace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: oteltrace.FlagsSampled, Remote: true}))
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if res, err := c.Call(ctx, "front", "m", nil, nil); err != nil || string(res.Body) != "back" {
		t.Fatalf("caller → front → back: %v, %v", res, err)
	}
	c.Close()
	out.Close()
	front.Shutdown(context.Background())
	back.Shutdown(context.Background())
	a.Shutdown(context.Background())
	b.Shutdown(context.Background())
	// caller, a first, b last, front, front's client, b first, a last, back.
	spans := trace(sink, traceID)
	n := map[string]int{}
	for _, s := range spans {
		n[s.Local.ServiceName]++
	}
	if len(spans) != 8 || n["meshd"] != 4 || n["caller"] != 1 || n["front"] != 2 || n["back"] != 1 {
		t.Fatalf("trace %s has %d spans by service %v, want 8: caller 1, meshd 4, front 2, back 1", traceID, len(spans), n)
	}
	if lost := trace(sink, traceID[16:]); len(lost) > 0 {
		t.Fatalf("%d spans in the trace of the low half alone", len(lost))
	}
}
