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
		name = r.names.intern(frag.Chunks[0]) // arg1, the method
	}
	span, hop := r.cfg.Tracer.StartPrivate(context.Background(), name, trace.SpanKindServer, req.Tracing, false)
	rc.hop = hop
	hop.Put(out[frame.CallReqTracingOffset:])
	if !span.Recording() {
		return
	}
	rc.span = span
	caller, _ := req.Headers.Get(frame.HeaderCallerName)
	peer := rc.dst.Peer().HostPort
	if rc.dst.Peer().Ephemeral() {
		peer = rc.dst.RemoteHostPort()
	}
	hopKind := "last"
	if rc.ep != nil {
		hopKind = "first"
	}
	span.SetString("mesh.service", r.names.intern(req.Service))
	span.SetString("mesh.caller", r.names.intern(caller))
	span.SetString("peer.address", peer)
	span.SetString("mesh.hop", hopKind)
	if key, ok := req.Headers.Get(frame.HeaderShardKey); ok {
		span.SetString("mesh.shard_key", string(key))
	}
}

// endSpan closes the hop's span with the call's outcome and its routing
// decisions: the last attempt's as tags, and every attempt as an event when
// there were several.
func (r *Router) endSpan(rc *relayed, result outcome) {
	r.mu.Lock()
	span := rc.span
	rc.span = tracing.Private{} // ended spans are recycled: nothing may touch it after
	rec := rc.rec
	r.mu.Unlock()
	if !span.Recording() {
		return
	}
	if rec.n > 0 {
		last := &rec.attempts[rec.n-1]
		var instance string
		if last.ep != nil {
			instance = last.ep.id
		}
		span.SetString("mesh.instance", instance)
		var why [192]byte
		span.SetString("mesh.decision", string(rec.appendWhy(why[:0], rec.n-1)))
	}
	if rec.n > 1 {
		span.SetInt("mesh.attempts", rec.n)
		for i, a := range rec.explain().Attempts {
			span.Event(fmt.Sprintf("attempt %d", i+1),
				attribute.String("mesh.instance", a.Instance),
				attribute.String("mesh.why", a.Why),
				attribute.String("mesh.result", a.Result),
				attribute.Float64("mesh.ms", a.Millis),
			)
		}
	}
	span.SetString("mesh.result", resultName(result))
	if result.failed() || result.code != 0 {
		span.Fail(result.code.String(), "")
	}
	span.End()
}
