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
	sc := FromFrame(in)
	if !sc.IsValid() || !sc.IsSampled() || !sc.IsRemote() || low64(sc.TraceID()) != in.TraceID || spanID64(sc.SpanID()) != in.SpanID {
		t.Fatalf("span context %+v from %+v", sc, in)
	}
	if FromFrame(frame.Tracing{TraceID: 1, SpanID: 2}).IsSampled() {
		t.Fatal("an unsampled field gave a sampled span context")
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
	if _, span, tr := off.Start(context.Background(), "m", trace.SpanKindClient, frame.Tracing{}, false); span.IsRecording() || tr != (frame.Tracing{}) {
		t.Fatal("a nil tracer recorded")
	}
	never := newTestTracer(t, 0)
	_, span, tr := never.Start(context.Background(), "m", trace.SpanKindClient, frame.Tracing{}, false)
	if span.IsRecording() || tr.TraceID == 0 || tr.Sampled() {
		t.Fatalf("rate 0: recording %v, field %+v; want ids sent unsampled", span.IsRecording(), tr)
	}
	ctx, span, tr := never.Start(context.Background(), "m", trace.SpanKindClient, frame.Tracing{}, true)
	if !span.IsRecording() || !tr.Sampled() {
		t.Fatal("a forced call was not recorded")
	}
	// A child of a recorded span is recorded, in the same trace, with it as parent.
	_, child, ctr := never.Start(ctx, "n", trace.SpanKindClient, frame.Tracing{}, false)
	if !child.IsRecording() || ctr.TraceID != tr.TraceID || ctr.ParentID != tr.SpanID {
		t.Fatalf("child field %+v of parent %+v", ctr, tr)
	}
	always := newTestTracer(t, 1)
	// The caller's decision wins over the rate, both ways.
	if _, span, out := always.Start(context.Background(), "m", trace.SpanKindServer, frame.Tracing{TraceID: 5, SpanID: 6}, false); span.IsRecording() || out.TraceID != 5 {
		t.Fatal("an unsampled caller's call was recorded")
	}
	_, span, out := never.Start(context.Background(), "m", trace.SpanKindServer, frame.Tracing{TraceID: 5, SpanID: 6, Flags: 1}, false)
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
		_, s, _ := tr.Start(context.Background(), "x", trace.SpanKindClient, frame.Tracing{}, false)
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
