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
	// Remote names the service a client span calls (its remote endpoint).
	Remote     string
	Start, End time.Time
	// Tags are written as they are: keys must be unique, and not those the
	// process, status or scope set (service.name, error, otel.*).
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

// Emit writes r as a span of this process: the JSON is what the span API
// would have produced for the same facts (a test holds the two equal).
func (t *Tracer) Emit(r *Record) {
	if t == nil {
		return
	}
	t.queue.put(r.Tracing.SpanID, func(b []byte) []byte { return appendRecord(b, t, r) })
}

func appendRecord(b []byte, t *Tracer, r *Record) []byte {
	tid, sid, pid := otelIDs(r.Tracing)
	b = appendHead(b, tid, sid, pid, r.Kind, r.Name, r.Start, r.End, &t.parts)
	if r.Remote != "" && (r.Kind == trace.SpanKindClient || r.Kind == trace.SpanKindProducer) {
		b = append(b, `,"remoteEndpoint":{"serviceName":`...)
		b = appendLowerString(b, r.Remote)
		b = append(b, '}')
	}
	b = appendEvents(b, r.Events)
	b = append(b, t.parts.tags...)
	for _, tag := range r.Tags {
		if tag.Text != nil {
			b = appendTag(b, tag.Key, tag.Text)
		} else {
			b = appendTag(b, tag.Key, tag.Value)
		}
	}
	if r.Code != "" { // as Error on a span: the code, and the status saying so
		b = appendTag(b, "mesh.error_message", r.Message)
		b = appendTag(b, "otel.status_code", "ERROR")
		b = appendTag(b, "error", r.Code+": "+r.Message) // failures only: the concatenation may allocate
	}
	b = append(b, meshScopeTag...)
	return append(b, "}}"...)
}
