package tracing

import (
	"context"
	"encoding/binary"
	"encoding/hex"

	"go.opentelemetry.io/otel/trace"

	"github.com/meshrpc/mesh/frame"
)

// HeaderTraceHigh is the transport header that carries the high 64 bits of
// a 128-bit trace id, as 16 hex digits, beside the frame's tracing field,
// which has room for the low 64 only. W3C and OpenTelemetry tracers make
// 128-bit ids: without the high half a call's spans would land in a trace
// of their own. Peers that do not know the header pass it on or ignore it.
const HeaderTraceHigh = "mesh-trace-high"

// High is the high half of a call's trace id, read from its transport
// headers: 0 for a 64-bit id (no header, or one that is not 16 hex digits).
func High(h frame.Headers) uint64 {
	v, ok := h.Get(HeaderTraceHigh)
	var b [8]byte
	if !ok || len(v) != 16 {
		return 0
	}
	if _, err := hex.Decode(b[:], v); err != nil {
		return 0
	}
	return binary.BigEndian.Uint64(b[:])
}

// AppendHigh adds the header for a trace id's high half hi (none for 0).
func AppendHigh(h frame.Headers, hi uint64) frame.Headers {
	if hi == 0 {
		return h
	}
	return frame.AppendHeader(h, HeaderTraceHigh, hex.EncodeToString(binary.BigEndian.AppendUint64(nil, hi)))
}

// HighOf is the high half of the trace id of the span in ctx (0: none, or
// a 64-bit id).
func HighOf(ctx context.Context) uint64 { return high64(trace.SpanContextFromContext(ctx).TraceID()) }

func high64(t trace.TraceID) uint64 { return binary.BigEndian.Uint64(t[:8]) }
