package tracing

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/meshrpc/mesh/frame"
)

func TestFromFrame(t *testing.T) {
	in := frame.Tracing{TraceID: 0x1122334455667788, SpanID: 0x99, Flags: frame.TracingSampled}
	sc := FromFrame(in, 0)
	if !sc.IsValid() || !sc.IsSampled() || !sc.IsRemote() || low64(sc.TraceID()) != in.TraceID || spanID64(sc.SpanID()) != in.SpanID {
		t.Fatalf("span context %+v from %+v", sc, in)
	}
	if FromFrame(frame.Tracing{TraceID: 1, SpanID: 2}, 0).IsSampled() {
		t.Fatal("an unsampled field gave a sampled span context")
	}
}

// A 128-bit trace id's high half travels in HeaderTraceHigh and comes back
// whole in every span the trace's calls record: through FromFrame, Start
// (from a frame, and from a context whose span has a 128-bit id) and Emit.
func TestTraceHigh(t *testing.T) {
	for _, tc := range []struct {
		hi   uint64
		want string
	}{
		{0, ""}, {1, "0000000000000001"}, {0x5b8efff798038103, "5b8efff798038103"}, {^uint64(0), "ffffffffffffffff"},
	} {
		h := AppendHigh(nil, tc.hi)
		if v, _ := h.Get(HeaderTraceHigh); string(v) != tc.want || High(h) != tc.hi {
			t.Errorf("high %x: header %q, read back %x", tc.hi, v, High(h))
		}
	}
	for _, bad := range []string{"", "1", "5b8efff79803810", "5b8efff7980381033", "5b8efff79803810g", "+b8efff798038103"} {
		if hi := High(frame.AppendHeader(nil, HeaderTraceHigh, bad)); hi != 0 {
			t.Errorf("header %q read as %x, want 0", bad, hi)
		}
	}

	const hi = 0x5b8efff798038103
	in := frame.Tracing{TraceID: 0x1122334455667788, SpanID: 0x99, Flags: frame.TracingSampled}
	if sc := FromFrame(in, hi); high64(sc.TraceID()) != hi || low64(sc.TraceID()) != in.TraceID {
		t.Fatalf("FromFrame: trace id %s", sc.TraceID())
	}
	tr := newTestTracer(t, 0)
	ctx, span, out := tr.Start(context.Background(), "m", trace.SpanKindServer, in, hi, false)
	if got := span.SpanContext().TraceID(); high64(got) != hi || low64(got) != in.TraceID || out.TraceID != in.TraceID {
		t.Fatalf("a server span of a 128-bit trace: trace id %s, field %+v", got, out)
	}
	if HighOf(ctx) != hi {
		t.Fatalf("the context's high half %x, want %x", HighOf(ctx), hi)
	}
	// A child started from the context (the SDK client's call) keeps it,
	// whatever parent.TraceID's high argument says.
	_, child, _ := tr.Start(ctx, "n", trace.SpanKindClient, frame.Tracing{}, 7, false)
	if got := child.SpanContext().TraceID(); high64(got) != hi {
		t.Fatalf("child's trace id %s", got)
	}
	// Not recorded (the caller did not sample): the context still carries
	// the whole id for the calls the handler makes.
	ctx, span, _ = tr.Start(context.Background(), "m", trace.SpanKindServer, frame.Tracing{TraceID: 3, SpanID: 4}, hi, false)
	if span.IsRecording() || HighOf(ctx) != hi {
		t.Fatalf("unsampled: recording %v, high %x", span.IsRecording(), HighOf(ctx))
	}
	// A new trace has 64 bits.
	ctx, _, _ = tr.Start(context.Background(), "m", trace.SpanKindServer, frame.Tracing{}, 0, true)
	if HighOf(ctx) != 0 {
		t.Fatalf("a new trace's high half %x", HighOf(ctx))
	}
}

func newTestTracer(t *testing.T, rate float64) *Tracer {
	tr, err := New(Config{ZipkinURL: "http://127.0.0.1:1/api/v2/spans", SampleRate: rate, ServiceName: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		tr.Shutdown(ctx)
	})
	return tr
}

func TestSamplingDecisions(t *testing.T) {
	var off *Tracer
	if _, span, tr := off.Start(context.Background(), "m", trace.SpanKindClient, frame.Tracing{}, 0, false); span.IsRecording() || tr != (frame.Tracing{}) {
		t.Fatal("a nil tracer recorded")
	}
	never := newTestTracer(t, 0)
	_, span, tr := never.Start(context.Background(), "m", trace.SpanKindClient, frame.Tracing{}, 0, false)
	if span.IsRecording() || tr.TraceID == 0 || tr.Sampled() {
		t.Fatalf("rate 0: recording %v, field %+v; want ids sent unsampled", span.IsRecording(), tr)
	}
	ctx, span, tr := never.Start(context.Background(), "m", trace.SpanKindClient, frame.Tracing{}, 0, true)
	if !span.IsRecording() || !tr.Sampled() {
		t.Fatal("a forced call was not recorded")
	}
	// A child of a recorded span is recorded, in the same trace, with it as parent.
	_, child, ctr := never.Start(ctx, "n", trace.SpanKindClient, frame.Tracing{}, 0, false)
	if !child.IsRecording() || ctr.TraceID != tr.TraceID || ctr.ParentID != tr.SpanID {
		t.Fatalf("child field %+v of parent %+v", ctr, tr)
	}
	always := newTestTracer(t, 1)
	// The caller's decision wins over the rate, both ways.
	if _, span, out := always.Start(context.Background(), "m", trace.SpanKindServer, frame.Tracing{TraceID: 5, SpanID: 6}, 0, false); span.IsRecording() || out.TraceID != 5 {
		t.Fatal("an unsampled caller's call was recorded")
	}
	_, span, out := never.Start(context.Background(), "m", trace.SpanKindServer, frame.Tracing{TraceID: 5, SpanID: 6, Flags: 1}, 0, false)
	if !span.IsRecording() || out.TraceID != 5 || out.ParentID != 6 || out.SpanID == 6 {
		t.Fatalf("a sampled caller's call: recording %v, field %+v", span.IsRecording(), out)
	}
}

// A full queue drops and counts; ending a span never waits for the backend.
func TestQueueDropsInsteadOfBlocking(t *testing.T) {
	release := make(chan struct{})
	stuck := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-release }))
	defer stuck.Close()
	tr, err := New(Config{ZipkinURL: stuck.URL, SampleRate: 1, ServiceName: "s", QueueSize: 10})
	if err != nil {
		t.Fatal(err)
	}
	// Less than one export's timeout: no span waited for the stuck backend.
	start := time.Now()
	for range 2000 {
		_, s, _ := tr.Start(context.Background(), "x", trace.SpanKindClient, frame.Tracing{}, 0, false)
		s.End()
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("ending 2000 spans took %v with a stuck backend", d)
	}
	if n := tr.Dropped(); n < 2000-10-batchSize {
		t.Fatalf("dropped %d of 2000 with a queue of 10", n)
	}
	close(release)
	tr.Shutdown(context.Background())
}

func TestNewRejectsBadConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{ZipkinURL: "http://127.0.0.1:9411/api/v2/spans", SampleRate: 2}, "sample rate"},
		{Config{ZipkinURL: "127.0.0.1:9411"}, "want an http(s) URL"},
		{Config{ZipkinURL: "http://127.0.0.1:9411/api/v2/spans", Encoding: "thrift"}, `zipkin encoding "thrift"`},
	} {
		if tr, err := New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: tracer %v, error %v; want one mentioning %q", tc.cfg, tr, err, tc.want)
		}
	}
}
