package tracing

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/embedded"
)

// span is a recorded span behind OpenTelemetry's trace.Span interface.
//
// It holds what a Zipkin span can show and nothing more (no links, no
// dropped-attribute accounting), so starting and ending one is a single
// allocation: the call path records four of them per two-hop call, and
// OpenTelemetry's SDK spans cost several times the call itself there.
type span struct {
	embedded.Span
	tracer *Tracer
	// scope and version name the instrumentation that made the span.
	scope, version string
	sc             trace.SpanContext
	parent         trace.SpanID
	kind           trace.SpanKind
	start          time.Time

	mu     sync.Mutex
	ended  bool
	name   string
	end    time.Time
	attrs  []attribute.KeyValue
	events []Event
	status codes.Code
	desc   string
}

func (s *span) SpanContext() trace.SpanContext { return s.sc }

func (s *span) IsRecording() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.ended
}

func (s *span) End(opts ...trace.SpanEndOption) {
	now := time.Now()
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	s.ended = true
	s.end = now
	if len(opts) > 0 {
		if cfg := trace.NewSpanEndConfig(opts...); !cfg.Timestamp().IsZero() {
			s.end = cfg.Timestamp()
		}
	}
	s.mu.Unlock()
	s.tracer.queue.add(s)
}

func (s *span) SetAttributes(kv ...attribute.KeyValue) {
	s.mu.Lock()
	if !s.ended {
		s.setAttributes(kv)
	}
	s.mu.Unlock()
}

func (s *span) setAttributes(kv []attribute.KeyValue) {
	for _, a := range kv {
		if a.Valid() {
			s.attrs = append(s.attrs, a)
		}
	}
}

func (s *span) AddEvent(name string, opts ...trace.EventOption) {
	cfg := trace.NewEventConfig(opts...)
	s.addEvent(name, cfg.Timestamp(), cfg.Attributes())
}

func (s *span) addEvent(name string, t time.Time, attrs []attribute.KeyValue) {
	s.mu.Lock()
	if !s.ended {
		s.events = append(s.events, Event{name, t, attrs})
	}
	s.mu.Unlock()
}

// RecordError adds an "exception" event, as OpenTelemetry's SDK does.
func (s *span) RecordError(err error, opts ...trace.EventOption) {
	if err == nil {
		return
	}
	cfg := trace.NewEventConfig(opts...)
	attrs := append([]attribute.KeyValue{
		attribute.String("exception.type", fmt.Sprintf("%T", err)),
		attribute.String("exception.message", err.Error()),
	}, cfg.Attributes()...)
	s.addEvent("exception", cfg.Timestamp(), attrs)
}

// SetStatus follows OpenTelemetry's rules: Ok is final, Unset changes
// nothing, and only an error keeps its description.
func (s *span) SetStatus(code codes.Code, desc string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended || code == codes.Unset || s.status == codes.Ok {
		return
	}
	if code != codes.Error {
		desc = ""
	}
	s.status, s.desc = code, desc
}

func (s *span) SetName(name string) {
	s.mu.Lock()
	if !s.ended {
		s.name = name
	}
	s.mu.Unlock()
}

// AddLink does nothing: Zipkin has no links (OpenTelemetry's Zipkin
// exporter drops them too).
func (s *span) AddLink(trace.Link) {}

func (s *span) TracerProvider() trace.TracerProvider { return provider{t: s.tracer} }

// provider lets code holding a span (a handler, from its context) start
// spans of its own in the same trace, through OpenTelemetry's API.
type provider struct {
	embedded.TracerProvider
	t *Tracer
}

var _ trace.TracerProvider = provider{}

func (p provider) Tracer(name string, opts ...trace.TracerOption) trace.Tracer {
	cfg := trace.NewTracerConfig(opts...)
	return scopedTracer{t: p.t, scope: name, version: cfg.InstrumentationVersion()}
}

type scopedTracer struct {
	embedded.Tracer
	t              *Tracer
	scope, version string
}

// Start begins a span as a child of the span in ctx. A child of a sampled
// span is recorded; anything else (no span, an unsampled one, a nil Tracer)
// gets a span that records nothing.
func (st scopedTracer) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	cfg := trace.NewSpanStartConfig(opts...)
	psc := trace.SpanContextFromContext(ctx)
	if cfg.NewRoot() || st.t == nil || !psc.IsSampled() {
		return ctx, trace.SpanFromContext(ctx)
	}
	var sid trace.SpanID
	binary.BigEndian.PutUint64(sid[:], st.t.ids())
	s := st.t.newSpan(psc.TraceID(), sid, psc.SpanID(), name, cfg.SpanKind(), cfg.Timestamp())
	s.scope, s.version = st.scope, st.version
	s.setAttributes(cfg.Attributes())
	return trace.ContextWithSpan(ctx, s), s
}
