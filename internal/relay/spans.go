package relay

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/routing"
	"github.com/meshrpc/mesh/internal/tracing"
)

// hopTrace is what a traced call's hop span will say, kept with the call
// while it runs: the span itself is written once, at the end (Emit), so
// no span object lives through the call.
type hopTrace struct {
	name, service, caller, peer, shardKey string
	first                                 bool // this meshd chose the instance
	start                                 time.Time
	events                                []tracing.Event // retries; guarded by relayed.mu
}

// hopTraces recycles hopTraces: the relay alone holds one, from startSpan
// until endSpan takes it off the call.
var hopTraces = sync.Pool{New: func() any { return new(hopTrace) }}

// startSpan decides whether this hop records a span for a call that is
// traced (its caller sampled it) or has no trace yet (this meshd decides),
// and writes the hop's tracing field into out: same trace, the incoming
// span as parent, this hop's span id. Unsampled calls cost nothing here.
func (r *Relay) startSpan(rc *relayed, f *frame.Frame, req *frame.CallReq, out []byte, start time.Time) {
	if r.cfg.Tracer == nil || req.Tracing.TraceID != 0 && !req.Tracing.Sampled() {
		return
	}
	hop, record := r.cfg.Tracer.Decide(context.Background(), req.Tracing, false)
	rc.hop = hop
	frame.SetCallReqTracing(out, hop)
	if !record {
		return
	}
	ht := hopTraces.Get().(*hopTrace)
	*ht = hopTrace{name: "call", service: rc.call.Service, first: !rc.lastHop, start: start}
	rc.rec.setTraceHigh(traceHigh(req))
	if method := frame.CallReqArg1(f.Payload, req); method != nil {
		ht.name = r.names.intern(method)
	}
	ht.caller = r.names.intern(rc.call.Caller) // the proven identity, not "cn"

	ht.peer = rc.dst.Peer().HostPort
	if rc.dst.Peer().Ephemeral() {
		ht.peer = rc.dst.RemoteHostPort()
	}
	if key, ok := req.Headers.Get(frame.HeaderShardKey); ok {
		ht.shardKey = string(key)
	}
	rc.trace = ht
}

// refusedSpan records, for a traced call, the span of a hop that refused
// it (a stage's refusal: an intention, the kill switch, a limit), so the
// trace shows where and why the call stopped; it returns the trace's id
// when it did (zero: not sampled).
func (r *Relay) refusedSpan(f *frame.Frame, req *frame.CallReq, service string, caller []byte, stage string, e *frame.Error) trace.TraceID {
	if r.cfg.Tracer == nil || req.Tracing.TraceID != 0 && !req.Tracing.Sampled() {
		return trace.TraceID{}
	}
	hop, record := r.cfg.Tracer.Decide(context.Background(), req.Tracing, false)
	if !record {
		return trace.TraceID{}
	}
	name := "call"
	if method := frame.CallReqArg1(f.Payload, req); method != nil {
		name = r.names.intern(method)
	}
	now := time.Now()
	tags := [...]tracing.Tag{
		{Key: "mesh.service", Value: service},
		{Key: "mesh.caller", Value: r.names.intern(caller)},
		{Key: "mesh.refused_by", Value: stage},
		{Key: "mesh.result", Value: e.Message},
	}
	high := traceHigh(req)
	r.cfg.Tracer.Emit(&tracing.Record{Name: name, Kind: trace.SpanKindServer, Tracing: hop, TraceHigh: high,
		Start: now, End: now, Tags: tags[:], Code: e.Code.String()})
	return tracing.TraceID(hop, high)
}

// endSpan writes the hop's span with the call's outcome and its routing
// decisions: the last attempt's as tags, and every attempt as an event when
// there were several.
// ht is the call's hopTrace, which finish took off it (so it is written
// once).
func (r *Relay) endSpan(rc *relayed, ht *hopTrace, result routing.Outcome) {
	if ht == nil {
		return
	}
	rec := &rc.rec
	hopKind := "last"
	if ht.first {
		hopKind = "first"
	}
	// Tags go into a fixed array by index (not append), so they and the
	// decision text stay on this stack.
	var buf [10]tracing.Tag
	n := 0
	tag := func(t tracing.Tag) { buf[n] = t; n++ }
	tag(tracing.Tag{Key: "mesh.service", Value: ht.service})
	tag(tracing.Tag{Key: "mesh.caller", Value: ht.caller})
	tag(tracing.Tag{Key: "peer.address", Value: ht.peer})
	tag(tracing.Tag{Key: "mesh.hop", Value: hopKind})
	if ht.shardKey != "" {
		tag(tracing.Tag{Key: "mesh.shard_key", Value: ht.shardKey})
	}
	var why [192]byte
	if last := rec.ended(); last != nil { // the attempt that ended the call: the last, or a hedge's winner
		tag(tracing.Tag{Key: "mesh.instance", Value: last.instance})
		tag(tracing.Tag{Key: "mesh.decision", Text: rec.appendWhy(why[:0], int(rec.cur), true)})
		for i := range int(rec.n) {
			if rec.attempt(i).hedge {
				won := "lost"
				if last.hedge {
					won = "won"
				}
				tag(tracing.Tag{Key: "mesh.hedge", Value: won})
				break
			}
		}
	}
	events := ht.events
	if rec.n > 1 {
		tag(tracing.Tag{Key: "mesh.attempts", Value: strconv.Itoa(int(rec.n))})
		for i, a := range rec.explain(nil).Attempts {
			events = append(events, tracing.Event{Name: fmt.Sprintf("attempt %d", i+1), Time: time.Now(), Attrs: []attribute.KeyValue{
				attribute.String("mesh.instance", a.Instance),
				attribute.String("mesh.why", a.Why),
				attribute.String("mesh.result", a.Result),
				attribute.Float64("mesh.ms", a.Millis),
			}})
		}
	}
	tag(tracing.Tag{Key: "mesh.result", Value: result.String()})
	var code string
	if result.Code != 0 && result != routing.CallerGone { // a caller giving up is no error of the hop
		code = result.Code.String()
	}
	r.cfg.Tracer.Emit(&tracing.Record{Name: ht.name, Kind: trace.SpanKindServer, Tracing: rc.hop, TraceHigh: rc.rec.traceHigh(),
		Start: ht.start, End: time.Now(), Tags: buf[:n], Events: events, Code: code})
	*ht = hopTrace{}
	hopTraces.Put(ht)
}

// traceID is the whole trace id of a call this hop records (sampled).
func (rc *relayed) traceID() trace.TraceID { return tracing.TraceID(rc.hop, rc.rec.traceHigh()) }

// traceHigh is the high half of a call's 128-bit trace id: 0 for a 64-bit
// one, and for a call with no trace yet (this hop starts a 64-bit one).
func traceHigh(req *frame.CallReq) uint64 {
	if req.Tracing.TraceID == 0 {
		return 0
	}
	return tracing.High(req.Headers)
}
