package tracing

import (
	"context"
	"math/rand/v2"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/meshrpc/mesh/frame"
)

// Decide is the sampling decision for a call whose parent is a frame's
// tracing field (zero for none) or else the span in ctx. It returns the
// tracing field the call goes out with (this span's ids) and whether to
// record it: the caller's decision stands (a sampled parent gets a child
// span id, an unsampled one is passed on), and a new trace is sampled at the
// tracer's rate, or always when forced. A call not recorded costs no more
// than a random number; the decision travels with its ids.
func (t *Tracer) Decide(ctx context.Context, parent frame.Tracing, forced bool) (out frame.Tracing, record bool) {
	if t == nil {
		return parent, false
	}
	switch psc := trace.SpanContextFromContext(ctx); {
	case parent.TraceID != 0 && !parent.Sampled():
		return parent, false
	case parent.TraceID != 0:
		return frame.Tracing{TraceID: parent.TraceID, SpanID: t.ids(), ParentID: parent.SpanID, Flags: frame.TracingSampled}, true
	case psc.IsValid() && (psc.IsSampled() || forced):
		return frame.Tracing{TraceID: low64(psc.TraceID()), SpanID: t.ids(), ParentID: spanID64(psc.SpanID()), Flags: frame.TracingSampled}, true
	case psc.IsValid():
		return frame.Tracing{TraceID: low64(psc.TraceID()), SpanID: t.ids(), ParentID: spanID64(psc.SpanID())}, false
	case !forced && rand.Float64() >= t.rate:
		id := t.ids()
		return frame.Tracing{TraceID: id, SpanID: id}, false
	}
	id := t.ids()
	return frame.Tracing{TraceID: id, SpanID: id, Flags: frame.TracingSampled}, true
}

// Record is a finished span its process kept in its own structures while the
// call ran, written out by Emit: no span object lives through the call.
type Record struct {
	Name    string
	Kind    trace.SpanKind
	Tracing frame.Tracing // the span's own ids (from Decide)
	// TraceHigh is the high half of a 128-bit trace id (HeaderTraceHigh).
	TraceHigh uint64
	// Remote names the service a client span calls (its remote endpoint).
	Remote     string
	Start, End time.Time
	// Tags are written as they are: keys must be unique UTF-8 text, and not
	// those the process, status or scope set (service.name, error, otel.*).
	Tags   []Tag
	Events []Event
	// Code, when not empty, marks the span failed with this wire error code
	// (and Message), as Error does on a span.
	Code, Message string
}

// Tag is a span tag with a text value: Value, or Text when it is not nil
// (text just written into a buffer need not become a string first).
type Tag struct {
	Key, Value string
	Text       []byte
}

// Event is something that happened during a span.
type Event struct {
	Name  string
	Time  time.Time
	Attrs []attribute.KeyValue
}

// Emit writes r as a span of this process: what the span API would have
// sent for the same facts (a test holds the two equal).
func (t *Tracer) Emit(r *Record) {
	if t == nil {
		return
	}
	z := zspan{kind: r.Kind, name: r.Name, start: r.Start, end: r.End, events: r.Events, tags: r.Tags,
		code: r.Code, message: r.Message, meshScope: true}
	z.tid, z.sid, z.pid = otelIDs(r.Tracing, r.TraceHigh)
	if r.Kind == trace.SpanKindClient || r.Kind == trace.SpanKindProducer {
		z.remote = r.Remote
	}
	t.queue.put(r.Tracing.SpanID, &z)
}
