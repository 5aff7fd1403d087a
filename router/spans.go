package router

import (
	"context"
	"fmt"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/tracing"
)

// startSpan opens this hop's span for a call that is traced (its caller
// sampled it) or has no trace yet (this meshd decides), and writes the hop's
// tracing field into out: same trace, the incoming span as parent, this
// span's id. Unsampled calls cost nothing here.
func (r *Router) startSpan(rc *relayed, f *frame.Frame, req *frame.CallReq, out []byte) {
	if r.cfg.Tracer == nil || req.Tracing.TraceID != 0 && !req.Tracing.Sampled() {
		return
	}
	name := "call"
	var first frame.CallReq
	var frag frame.Fragment
	if frame.DecodeCallReq(f.Payload, &first, &frag) == nil && frag.NumChunks > 0 {
		name = string(frag.Chunks[0]) // arg1, the method
	}
	_, span, hop := r.cfg.Tracer.Start(context.Background(), name, trace.SpanKindServer, req.Tracing, false)
	rc.hop = hop
	hop.Put(out[frame.CallReqTracingOffset:])
	if !span.IsRecording() {
		return
	}
	rc.span = span
	caller, _ := req.Headers.Get(frame.HeaderCallerName)
	attrs := []attribute.KeyValue{
		attribute.String("mesh.service", string(req.Service)),
		attribute.String("mesh.caller", string(caller)),
		attribute.String("peer.address", rc.dst.RemoteAddr().String()),
	}
	if rc.ep != nil {
		attrs = append(attrs, attribute.String("mesh.hop", "first"), attribute.String("mesh.instance", rc.ep.id))
	} else {
		attrs = append(attrs, attribute.String("mesh.hop", "last"))
	}
	if key, ok := req.Headers.Get(frame.HeaderShardKey); ok {
		attrs = append(attrs, attribute.String("mesh.shard_key", string(key)))
	}
	span.SetAttributes(attrs...)
}

// endSpan closes the hop's span with the call's outcome and its routing
// decisions, attempt by attempt.
func (r *Router) endSpan(rc *relayed, result outcome) {
	span := rc.span
	if span == nil {
		return
	}
	r.mu.Lock()
	e := rc.rec.explain()
	r.mu.Unlock()
	for i, a := range e.Attempts {
		span.AddEvent(fmt.Sprintf("attempt %d", i+1), trace.WithAttributes(
			attribute.String("mesh.instance", a.Instance),
			attribute.String("mesh.why", a.Why),
			attribute.String("mesh.result", a.Result),
			attribute.Float64("mesh.ms", a.Millis),
		))
	}
	if n := len(e.Attempts); n > 0 {
		last := e.Attempts[n-1]
		span.SetAttributes(
			attribute.Int("mesh.attempts", n),
			attribute.String("mesh.instance", last.Instance),
			attribute.String("mesh.decision", last.Why),
		)
	}
	span.SetAttributes(attribute.String("mesh.result", resultName(result)))
	if result.failed() || result.code != 0 {
		tracing.Error(span, result.code.String(), "")
	}
	span.End()
}
