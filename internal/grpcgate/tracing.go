package grpcgate

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/meshrpc/mesh/frame"
)

// tracingOf reads a gRPC caller's trace context, W3C traceparent or B3
// (single or multiple headers), into TChannel's tracing field and, for a
// 128-bit trace id, its high half (which travels in
// tracing.HeaderTraceHigh). A malformed context is no context: the call
// goes on, starting a trace of its own if meshd samples it.
func tracingOf(md meta) (t frame.Tracing, high uint64) {
	if tp := md.get("traceparent"); tp != "" {
		if t, high, ok := parseTraceparent(tp); ok {
			return t, high
		}
	}
	if b3 := md.get("b3"); b3 != "" {
		parts := strings.Split(b3, "-")
		if len(parts) >= 2 {
			sampled := ""
			if len(parts) >= 3 {
				sampled = parts[2]
			}
			parent := ""
			if len(parts) >= 4 {
				parent = parts[3]
			}
			if t, high, ok := b3Tracing(parts[0], parts[1], parent, sampled); ok {
				return t, high
			}
		}
	}
	if id := md.get("x-b3-traceid"); id != "" {
		sampled := md.get("x-b3-sampled")
		if md.get("x-b3-flags") == "1" {
			sampled = "d"
		}
		if t, high, ok := b3Tracing(id, md.get("x-b3-spanid"), md.get("x-b3-parentspanid"), sampled); ok {
			return t, high
		}
	}
	return frame.Tracing{}, 0
}

// parseTraceparent reads version 00's "00-trace(32)-span(16)-flags(2)".
func parseTraceparent(s string) (frame.Tracing, uint64, bool) {
	if len(s) < 55 || s[2] != '-' || s[35] != '-' || s[52] != '-' || s[:2] == "ff" {
		return frame.Tracing{}, 0, false
	}
	trace, err1 := strconv.ParseUint(s[19:35], 16, 64) // the low half
	hi, err2 := strconv.ParseUint(s[3:19], 16, 64)
	span, err3 := strconv.ParseUint(s[36:52], 16, 64)
	flags, err4 := strconv.ParseUint(s[53:55], 16, 8)
	if err1 != nil || err2 != nil || err3 != nil || err4 != nil || trace == 0 || span == 0 {
		// A trace id whose low half is zero cannot travel: TChannel reads
		// a zero trace id as none.
		return frame.Tracing{}, 0, false
	}
	return frame.Tracing{TraceID: trace, SpanID: span, Flags: byte(flags) & frame.TracingSampled}, hi, true
}

// b3Tracing reads B3's fields: ids in hex (16 or 32 digits for the trace
// id), sampled "1", "d" (debug) or "true".
func b3Tracing(traceID, spanID, parentID, sampled string) (frame.Tracing, uint64, bool) {
	var hi uint64
	if len(traceID) == 32 {
		var err error
		if hi, err = strconv.ParseUint(traceID[:16], 16, 64); err != nil {
			return frame.Tracing{}, 0, false
		}
		traceID = traceID[16:]
	}
	trace, err1 := strconv.ParseUint(traceID, 16, 64)
	span, err2 := strconv.ParseUint(spanID, 16, 64)
	if err1 != nil || err2 != nil || trace == 0 || span == 0 {
		return frame.Tracing{}, 0, false
	}
	t := frame.Tracing{TraceID: trace, SpanID: span}
	if parentID != "" {
		t.ParentID, _ = strconv.ParseUint(parentID, 16, 64)
	}
	if sampled == "1" || sampled == "d" || sampled == "true" {
		t.Flags = frame.TracingSampled
	}
	return t, hi, true
}

// traceMetadata adds the trace context a gRPC server is sent for a call's
// tracing field and its trace id's high half, in both forms (W3C and B3
// single header); md has none.
func traceMetadata(md *meta, t frame.Tracing, high uint64) {
	if t.TraceID == 0 || t.SpanID == 0 {
		return
	}
	sampled := t.Flags & frame.TracingSampled
	md.add("traceparent", fmt.Sprintf("00-%016x%016x-%016x-%02x", high, t.TraceID, t.SpanID, sampled))
	if high != 0 {
		md.add("b3", fmt.Sprintf("%016x%016x-%016x-%d", high, t.TraceID, t.SpanID, sampled))
		return
	}
	md.add("b3", fmt.Sprintf("%016x-%016x-%d", t.TraceID, t.SpanID, sampled))
}
