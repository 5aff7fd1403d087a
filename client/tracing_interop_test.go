package client_test

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/opentracing/opentracing-go"
	"github.com/opentracing/opentracing-go/mocktracer"
	"github.com/uber/tchannel-go"
	tjson "github.com/uber/tchannel-go/json"
	"go.opentelemetry.io/otel/trace"

	"github.com/meshrpc/mesh/client"
	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/testkit"
	"github.com/meshrpc/mesh/internal/zipkintest"
)

// b3Tracer is a tchannel-go tracer that knows only text propagation in
// Zipkin's B3 headers, not the frame's tracing field: tchannel-go then puts
// random unsampled ids in the frame and the real context in the JSON
// scheme's $tracing$ application headers.
func b3Tracer() *mocktracer.MockTracer {
	mt := mocktracer.New()
	mt.RegisterInjector(opentracing.TextMap, b3{})
	mt.RegisterExtractor(opentracing.TextMap, b3{})
	return mt
}

type b3 struct{}

func (b3) Inject(sc mocktracer.MockSpanContext, carrier any) error {
	w, ok := carrier.(opentracing.TextMapWriter)
	if !ok {
		return opentracing.ErrInvalidCarrier
	}
	w.Set("x-b3-traceid", fmt.Sprintf("%016x", sc.TraceID))
	w.Set("x-b3-spanid", fmt.Sprintf("%016x", sc.SpanID))
	w.Set("x-b3-sampled", map[bool]string{true: "1", false: "0"}[sc.Sampled])
	return nil
}

func (b3) Extract(carrier any) (mocktracer.MockSpanContext, error) {
	r, ok := carrier.(opentracing.TextMapReader)
	if !ok {
		return mocktracer.MockSpanContext{}, opentracing.ErrInvalidCarrier
	}
	var sc mocktracer.MockSpanContext
	r.ForeachKey(func(k, v string) error {
		n, _ := strconv.ParseUint(v, 16, 64)
		switch k {
		case "x-b3-traceid":
			sc.TraceID = int(n)
		case "x-b3-spanid":
			sc.SpanID = int(n)
		case "x-b3-sampled":
			sc.Sampled = v == "1"
		}
		return nil
	})
	if sc.TraceID == 0 {
		return sc, opentracing.ErrSpanContextNotFound
	}
	return sc, nil
}

// find returns a span of kind the sink received.
func find(sink *zipkintest.Sink, kind string) zipkintest.Span {
	spans := sink.Spans(func(s zipkintest.Span) bool { return s.Kind == kind })
	if len(spans) == 0 {
		return zipkintest.Span{}
	}
	return spans[0]
}

// A tchannel-go JSON client whose tracer speaks only B3 headers calls a mesh
// server: the server's span joins the client's trace, as its child.
func TestTChannelGoB3ClientJoinsMeshServerTrace(t *testing.T) {
	sink := zipkintest.New(t)
	srv := client.NewServer(client.Options{ServiceName: "mesh", Zipkin: sink.URL, Logger: testkit.Quiet})
	var got trace.SpanContext
	srv.Register("mesh", "jecho", client.JSON(func(ctx context.Context, h map[string]string, in map[string]string) (map[string]string, error) {
		got = trace.SpanFromContext(ctx).SpanContext()
		if len(h) != 0 {
			return nil, fmt.Errorf("handler saw headers %v", h)
		}
		return in, nil
	}))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	defer srv.Shutdown(context.Background())

	tracer := b3Tracer()
	ch, err := tchannel.NewChannel("tgo-caller", &tchannel.ChannelOptions{Logger: tchannel.NullLogger, Tracer: tracer})
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	ctx, cancel := tjson.NewContext(5 * time.Second)
	defer cancel()
	var out map[string]string
	if err := tjson.NewClient(ch, "mesh", &tjson.ClientOptions{HostPort: l.Addr().String()}).Call(ctx, "jecho", map[string]string{"a": "b"}, &out); err != nil {
		t.Fatal(err)
	}
	spans := tracer.FinishedSpans()
	if len(spans) != 1 {
		t.Fatalf("tchannel-go recorded %d spans", len(spans))
	}
	cs := spans[0].Context().(mocktracer.MockSpanContext)
	tid := got.TraceID()
	if !got.IsSampled() || fmt.Sprintf("%x", tid[8:]) != fmt.Sprintf("%016x", cs.TraceID) {
		t.Fatalf("mesh server span %v, tchannel-go client trace %x", got, cs.TraceID)
	}
	srv.Shutdown(context.Background()) // flushes its spans
	span := find(sink, "SERVER")
	if span.ParentID != fmt.Sprintf("%016x", cs.SpanID) {
		t.Fatalf("exported server span %v, want parent %016x", span, cs.SpanID)
	}
}

// A mesh client's JSON call carries its trace in the $tracing$ headers too:
// a tchannel-go server whose tracer reads only B3 joins it.
func TestMeshClientTraceReachesTChannelGoB3Server(t *testing.T) {
	sink := zipkintest.New(t)
	tracer := b3Tracer()
	ch, err := tchannel.NewChannel("tgo", &tchannel.ChannelOptions{Logger: tchannel.NullLogger, Tracer: tracer})
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	err = tjson.Register(ch, tjson.Handlers{"jecho": func(ctx tjson.Context, in map[string]string) (map[string]string, error) {
		if h := ctx.Headers(); len(h) != 1 || h["k"] != "v" {
			return nil, fmt.Errorf("handler saw headers %v", h) // tracing keys are the tracer's
		}
		return in, nil
	}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.ListenAndServe("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	c := dial(t, ch.PeerInfo().HostPort, client.Options{ServiceName: "caller", TraceService: "caller-canary", Zipkin: sink.URL, Logger: testkit.Quiet})
	var sent frame.Tracing
	var out map[string]string
	if _, err := c.CallJSON(context.Background(), "tgo", "jecho", map[string]string{"k": "v"}, map[string]string{"x": "y"}, &out, client.ReportTracing(&sent)); err != nil {
		t.Fatal(err)
	}
	// tchannel-go ends its server span once the answer is sent, a moment
	// after the caller may have it.
	var spans []*mocktracer.MockSpan
	testkit.WaitFor(t, 5*time.Second, "tchannel-go's server span", func() bool {
		spans = tracer.FinishedSpans()
		return len(spans) > 0
	})
	if len(spans) != 1 {
		t.Fatalf("tchannel-go recorded %d spans", len(spans))
	}
	s := spans[0]
	if uint64(s.SpanContext.TraceID) != sent.TraceID || uint64(s.ParentID) != sent.SpanID || !s.SpanContext.Sampled {
		t.Fatalf("tchannel-go server span trace %x parent %x sampled %v; mesh client sent trace %x span %x",
			s.SpanContext.TraceID, s.ParentID, s.SpanContext.Sampled, sent.TraceID, sent.SpanID)
	}
	c.Close() // flushes its spans
	if span := find(sink, "CLIENT"); span.Local.ServiceName != "caller-canary" {
		t.Fatalf("client span %+v: want service name caller-canary (TraceService)", span)
	}
}

// The header forms read: B3 (64- and 128-bit ids) and uber-trace-id.
func TestTracingHeadersForms(t *testing.T) {
	for _, tc := range []struct {
		name    string
		headers string
		want    string
	}{
		{"b3", `{"$tracing$x-b3-traceid":"00000000000000aa","$tracing$x-b3-spanid":"bb","$tracing$x-b3-sampled":"1"}`, "aa/bb sampled"},
		{"b3 128-bit", `{"$tracing$x-b3-traceid":"463ac35c9f6413ad48485a3953bb6124","$tracing$x-b3-spanid":"bb","$tracing$x-b3-sampled":"0"}`, "48485a3953bb6124/bb"},
		{"uber-trace-id", `{"$tracing$uber-trace-id":"aa:bb:cc:1"}`, "aa/bb sampled"},
		{"uber-trace-id debug", `{"$tracing$uber-trace-id":"aa:bb:0:3"}`, "aa/bb sampled"},
		{"garbage", `{"$tracing$uber-trace-id":"zz"}`, "none"},
		{"none", `{"a":"b"}`, "none"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := client.TracingFromHeaders([]byte(tc.headers)); got != tc.want {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
		})
	}
}

// A JSON call's server span takes the headers' trace only when it differs
// from the frame's.
func TestHeaderParent(t *testing.T) {
	frameCtx := frame.Tracing{TraceID: 0xaa, SpanID: 0x11, Flags: frame.TracingSampled}
	same := []byte(`{"$tracing$x-b3-traceid":"00000000000000aa","$tracing$x-b3-spanid":"0000000000000009","$tracing$x-b3-sampled":"1"}`)
	other := []byte(`{"$tracing$x-b3-traceid":"00000000000000bb","$tracing$x-b3-spanid":"0000000000000009","$tracing$x-b3-sampled":"1"}`)
	for _, tc := range []struct {
		name  string
		arg2  []byte
		frame frame.Tracing
		want  frame.Tracing
	}{
		{"same trace in both", same, frameCtx, frameCtx},
		{"another trace in the headers", other, frameCtx, frame.Tracing{TraceID: 0xbb, SpanID: 9, Flags: frame.TracingSampled}},
		{"none in the frame", same, frame.Tracing{}, frame.Tracing{TraceID: 0xaa, SpanID: 9, Flags: frame.TracingSampled}},
		{"none in the headers", []byte(`{"a":"b"}`), frameCtx, frameCtx},
		{"headers not JSON", []byte(`{"$tracing$x-b3-traceid":`), frameCtx, frameCtx},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := client.HeaderParent(tc.arg2, tc.frame); got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}
