package tracing

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/url"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/meshrpc/mesh/frame"
)

// Config configures tracing for one process.
type Config struct {
	// ZipkinURL is where spans go, e.g. http://127.0.0.1:9411/api/v2/spans.
	// Empty turns tracing off.
	ZipkinURL string
	// SampleRate is the share of new traces recorded (0 to 1). A call that
	// arrives with a trace keeps its caller's decision.
	SampleRate float64
	// ServiceName names this process's spans.
	ServiceName string
	// Encoding is how spans are posted: EncodingProto (the default) or
	// EncodingJSON.
	Encoding string
	// QueueSize bounds the spans waiting for export (default 4096); beyond
	// it spans are dropped and counted, never waited for.
	QueueSize int
}

// Tracer starts spans for one process. A nil *Tracer is valid and records
// nothing, so callers need not check whether tracing is on.
type Tracer struct {
	queue *queue
	rate  float64
	// ids makes span and trace ids; tests make them predictable.
	ids func() uint64
}

// scope names the instrumentation of mesh's own spans, as OpenTelemetry
// names a tracer.
const scope = "github.com/meshrpc/mesh"

// New returns a Tracer, or nil when cfg.ZipkinURL is empty.
func New(cfg Config) (*Tracer, error) {
	if cfg.ZipkinURL == "" {
		return nil, nil
	}
	if cfg.SampleRate < 0 || cfg.SampleRate > 1 {
		return nil, fmt.Errorf("trace sample rate %g: want 0 to 1", cfg.SampleRate)
	}
	if cfg.QueueSize == 0 {
		cfg.QueueSize = 4096
	}
	if u, err := url.Parse(cfg.ZipkinURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("zipkin endpoint %q: want an http(s) URL such as http://127.0.0.1:9411/api/v2/spans", cfg.ZipkinURL)
	}
	enc, err := newEncoder(cfg.Encoding, cfg.ServiceName)
	if err != nil {
		return nil, err
	}
	return &Tracer{
		queue: newQueue(newZipkinExporter(cfg.ZipkinURL, enc.contentType()), enc, cfg.QueueSize),
		rate:  cfg.SampleRate,
		ids:   nonZero,
	}, nil
}

// Start begins a span of kind as a child of parent (a frame's tracing field;
// zero for none; high is its trace id's high half, HeaderTraceHigh) or, when
// parent is zero, of the span in ctx. Forced starts
// a sampled trace whatever the rate. It returns the context carrying the
// span (or, for a call not recorded, its ids) and the tracing field to send
// with the call.
func (t *Tracer) Start(ctx context.Context, name string, kind trace.SpanKind, parent frame.Tracing, high uint64, forced bool) (context.Context, trace.Span, frame.Tracing) {
	if t == nil {
		return ctx, noop, parent
	}
	if parent.TraceID == 0 {
		high = HighOf(ctx) // the trace, if any, is ctx's
	}
	s, out, remote := t.begin(ctx, name, kind, parent, high, forced)
	switch {
	case s != nil:
		return trace.ContextWithSpan(ctx, s), s, out
	case remote:
		return trace.ContextWithRemoteSpanContext(ctx, FromFrame(out, high)), noop, out
	}
	return ctx, noop, out
}

// begin decides whether a call is recorded (Decide) and, if so, starts its
// span. remote reports that a call not recorded should carry out in its
// context, as the parent of the calls it makes (its context has no trace).
func (t *Tracer) begin(ctx context.Context, name string, kind trace.SpanKind, parent frame.Tracing, high uint64, forced bool) (s *span, out frame.Tracing, remote bool) {
	out, record := t.Decide(ctx, parent, forced)
	if !record {
		return nil, out, parent.TraceID != 0 || !trace.SpanContextFromContext(ctx).IsValid()
	}
	tid, sid, pid := otelIDs(out, high)
	s = t.newSpan(tid, sid, pid, name, kind, time.Time{})
	s.scope = scope
	return s, out, false
}

// newSpan starts sampled span sid in trace tid under parent (zero for a
// root).
func (t *Tracer) newSpan(tid trace.TraceID, sid, parent trace.SpanID, name string, kind trace.SpanKind, start time.Time) *span {
	if start.IsZero() {
		start = time.Now()
	}
	return &span{
		tracer: t,
		sc:     trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled}),
		parent: parent, kind: kind, start: start, name: name,
	}
}

// noop is the span of calls not recorded: ending it is safe.
var noop = trace.SpanFromContext(context.Background())

// Dropped is the number of spans dropped because the export queue was full.
func (t *Tracer) Dropped() int64 {
	if t == nil {
		return 0
	}
	return t.queue.dropped.Load()
}

// Exported is the number of spans handed to the backend.
func (t *Tracer) Exported() int64 {
	if t == nil {
		return 0
	}
	return t.queue.exported.Load()
}

// Shutdown exports what is queued and stops.
func (t *Tracer) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	return t.queue.shutdown(ctx)
}

// TraceID is the whole trace id of a frame's tracing field and its high
// half (HeaderTraceHigh; 0 for none).
func TraceID(t frame.Tracing, high uint64) trace.TraceID {
	tid, _, _ := otelIDs(t, high)
	return tid
}

// FromFrame turns a frame's tracing field, with its trace id's high half
// (HeaderTraceHigh; 0 for none), into a remote span context.
func FromFrame(t frame.Tracing, high uint64) trace.SpanContext {
	tid, sid, _ := otelIDs(t, high)
	var flags trace.TraceFlags
	if t.Sampled() {
		flags = trace.FlagsSampled
	}
	return trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: flags, Remote: true})
}

// Error records a failed call on span with its wire code.
func Error(span trace.Span, code string, msg string) {
	span.SetAttributes(attribute.String("error", code), attribute.String("mesh.error_message", msg))
	span.SetStatus(codes.Error, code+": "+msg)
}

// otelIDs are a frame's 64-bit ids in OpenTelemetry's types, the trace id's
// high half high.
func otelIDs(t frame.Tracing, high uint64) (tid trace.TraceID, sid, parent trace.SpanID) {
	binary.BigEndian.PutUint64(tid[:8], high)
	binary.BigEndian.PutUint64(tid[8:], t.TraceID)
	binary.BigEndian.PutUint64(sid[:], t.SpanID)
	binary.BigEndian.PutUint64(parent[:], t.ParentID)
	return tid, sid, parent
}

func low64(t trace.TraceID) uint64   { return binary.BigEndian.Uint64(t[8:]) }
func spanID64(s trace.SpanID) uint64 { return binary.BigEndian.Uint64(s[:]) }
