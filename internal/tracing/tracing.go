package tracing

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/zipkin"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
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
	// QueueSize bounds the spans waiting for export (default 4096); beyond
	// it spans are dropped and counted, never waited for.
	QueueSize int
}

// Tracer starts spans for one process. A nil *Tracer is valid and records
// nothing, so callers need not check whether tracing is on.
type Tracer struct {
	tp    *sdktrace.TracerProvider
	t     trace.Tracer
	queue *queue
	rate  float64
}

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
	exp, err := zipkin.New(cfg.ZipkinURL, zipkin.WithLogger(log.New(io.Discard, "", 0)))
	if err != nil {
		return nil, fmt.Errorf("zipkin exporter: %w", err)
	}
	q := newQueue(exp, cfg.QueueSize)
	res := resource.NewSchemaless(semconv.ServiceName(cfg.ServiceName))
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(rootSampler{sdktrace.TraceIDRatioBased(cfg.SampleRate)})),
		sdktrace.WithSpanProcessor(q),
		sdktrace.WithIDGenerator(ids{}),
	)
	return &Tracer{tp: tp, t: tp.Tracer("github.com/meshrpc/mesh"), queue: q, rate: cfg.SampleRate}, nil
}

// Start begins a span of kind as a child of parent (a frame's tracing field;
// zero for none) or, when parent is zero, of the span in ctx. Forced starts
// a sampled trace whatever the rate. It returns the context carrying the
// span and the tracing field to send with the call.
func (t *Tracer) Start(ctx context.Context, name string, kind trace.SpanKind, parent frame.Tracing, forced bool) (context.Context, trace.Span, frame.Tracing) {
	if t == nil {
		return ctx, noop, parent
	}
	// Calls not recorded cost no more than a random number: the decision is
	// made here and travels with the ids, and OpenTelemetry is not involved.
	if parent.TraceID != 0 && !parent.Sampled() {
		return trace.ContextWithRemoteSpanContext(ctx, FromFrame(parent)), noop, parent
	}
	if parent.TraceID == 0 && !forced {
		psc := trace.SpanContextFromContext(ctx)
		switch {
		case psc.IsValid() && !psc.IsSampled():
			return ctx, noop, frame.Tracing{TraceID: low64(psc.TraceID()), SpanID: nonZero(), ParentID: spanID64(psc.SpanID())}
		case !psc.IsValid() && rand.Float64() >= t.rate:
			id := nonZero()
			unsampled := frame.Tracing{TraceID: id, SpanID: id}
			return trace.ContextWithRemoteSpanContext(ctx, FromFrame(unsampled)), noop, unsampled
		}
	}
	if parent.TraceID != 0 {
		ctx = trace.ContextWithRemoteSpanContext(ctx, FromFrame(parent))
	}
	if forced {
		ctx = context.WithValue(ctx, forceKey{}, true)
	}
	var parentID uint64
	if psc := trace.SpanContextFromContext(ctx); psc.IsValid() {
		sid := psc.SpanID()
		parentID = binary.BigEndian.Uint64(sid[:])
	}
	ctx, span := t.t.Start(ctx, name, trace.WithSpanKind(kind))
	return ctx, span, ToFrame(span.SpanContext(), parentID)
}

// noop is the span of a nil Tracer: it records nothing and ending it is safe.
var noop = trace.SpanFromContext(context.Background())

type forceKey struct{}

// rootSampler samples new traces at a rate, and always when forced (a
// caller asked for this call to be traced).
type rootSampler struct{ rate sdktrace.Sampler }

func (s rootSampler) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	if forced, _ := p.ParentContext.Value(forceKey{}).(bool); forced {
		return sdktrace.SamplingResult{Decision: sdktrace.RecordAndSample, Tracestate: trace.SpanContextFromContext(p.ParentContext).TraceState()}
	}
	return s.rate.ShouldSample(p)
}

func (s rootSampler) Description() string { return "mesh root sampler: " + s.rate.Description() }

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

// Flush exports what is queued (tests and shutdown use it).
func (t *Tracer) Flush(ctx context.Context) error {
	if t == nil {
		return nil
	}
	return t.tp.ForceFlush(ctx)
}

// Shutdown exports what is queued and stops.
func (t *Tracer) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	return t.tp.Shutdown(ctx)
}

// ToFrame turns a span context into the frame's tracing field; parent is the
// span id of the span's parent, which the field carries too.
func ToFrame(sc trace.SpanContext, parent uint64) frame.Tracing {
	if !sc.IsValid() {
		return frame.Tracing{}
	}
	tid, sid := sc.TraceID(), sc.SpanID()
	t := frame.Tracing{
		TraceID:  binary.BigEndian.Uint64(tid[8:]),
		SpanID:   binary.BigEndian.Uint64(sid[:]),
		ParentID: parent,
	}
	if sc.IsSampled() {
		t.Flags = frame.TracingSampled
	}
	return t
}

// FromFrame turns a frame's tracing field into a remote span context.
func FromFrame(t frame.Tracing) trace.SpanContext {
	var tid trace.TraceID
	var sid trace.SpanID
	binary.BigEndian.PutUint64(tid[8:], t.TraceID)
	binary.BigEndian.PutUint64(sid[:], t.SpanID)
	var flags trace.TraceFlags
	if t.Sampled() {
		flags = trace.FlagsSampled
	}
	return trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: flags, Remote: true})
}

// ids makes OpenTelemetry ids that fit the frame: 64-bit trace ids (the
// high half zero), so what the frame carries is the whole id.
type ids struct{}

func (ids) NewIDs(ctx context.Context) (trace.TraceID, trace.SpanID) {
	return newTraceID(), newSpanID()
}
func (ids) NewSpanID(ctx context.Context, _ trace.TraceID) trace.SpanID {
	return newSpanID()
}

func newTraceID() trace.TraceID {
	var tid trace.TraceID
	binary.BigEndian.PutUint64(tid[8:], nonZero())
	return tid
}

func newSpanID() trace.SpanID {
	var sid trace.SpanID
	binary.BigEndian.PutUint64(sid[:], nonZero())
	return sid
}

// Error records a failed call on span with its wire code.
func Error(span trace.Span, code string, msg string) {
	span.SetAttributes(attribute.String("error", code), attribute.String("mesh.error_message", msg))
	span.SetStatus(2, code+": "+msg) // codes.Error
}

// queue is a span processor with a bounded queue: OnEnd never blocks.
type queue struct {
	exp      sdktrace.SpanExporter
	ch       chan sdktrace.ReadOnlySpan
	flush    chan chan struct{}
	stop     chan struct{}
	done     chan struct{}
	once     sync.Once
	dropped  atomic.Int64
	exported atomic.Int64
}

const (
	batchSize     = 512
	batchInterval = time.Second
)

func newQueue(exp sdktrace.SpanExporter, size int) *queue {
	q := &queue{
		exp:   exp,
		ch:    make(chan sdktrace.ReadOnlySpan, size),
		flush: make(chan chan struct{}),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	go q.run()
	return q
}

func (q *queue) OnStart(context.Context, sdktrace.ReadWriteSpan) {}

func (q *queue) OnEnd(s sdktrace.ReadOnlySpan) {
	if !s.SpanContext().IsSampled() {
		return
	}
	select {
	case q.ch <- s:
	default:
		q.dropped.Add(1)
	}
}

func (q *queue) run() {
	defer close(q.done)
	batch := make([]sdktrace.ReadOnlySpan, 0, batchSize)
	tick := time.NewTicker(batchInterval)
	defer tick.Stop()
	send := func() {
		if len(batch) == 0 {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if q.exp.ExportSpans(ctx, batch) == nil {
			q.exported.Add(int64(len(batch)))
		} else {
			q.dropped.Add(int64(len(batch)))
		}
		cancel()
		clear(batch)
		batch = batch[:0]
	}
	add := func(s sdktrace.ReadOnlySpan) {
		if batch = append(batch, s); len(batch) == batchSize {
			send()
		}
	}
	// drain sends everything queued so far.
	drain := func() {
		for {
			select {
			case s := <-q.ch:
				add(s)
			default:
				send()
				return
			}
		}
	}
	for {
		select {
		case s := <-q.ch:
			add(s)
		case <-tick.C:
			send()
		case ack := <-q.flush:
			drain()
			close(ack)
		case <-q.stop:
			drain()
			return
		}
	}
}

func (q *queue) ForceFlush(ctx context.Context) error {
	ack := make(chan struct{})
	select {
	case q.flush <- ack:
	case <-q.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-ack:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (q *queue) Shutdown(ctx context.Context) error {
	q.once.Do(func() { close(q.stop) })
	select {
	case <-q.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	return errors.Join(q.exp.Shutdown(ctx))
}

func low64(t trace.TraceID) uint64   { return binary.BigEndian.Uint64(t[8:]) }
func spanID64(s trace.SpanID) uint64 { return binary.BigEndian.Uint64(s[:]) }
