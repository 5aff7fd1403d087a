package client

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"

	"github.com/meshrpc/mesh/frame"
)

// newTracing starts a sampled trace for a call forced to be traced by a
// process that does not trace itself, so the hops that do record it. Calls
// not forced go without a tracing field, and the first meshd decides.
func newTracing() frame.Tracing {
	id := rand.Uint64() | 1
	return frame.Tracing{SpanID: id, TraceID: id, Flags: frame.TracingSampled}
}

// tchannel-go's JSON and Thrift schemes also carry the caller's trace
// context in the application headers, under tracingPrefix and the keys of
// the caller's tracer; a tchannel-go peer whose tracer cannot read or write
// the frame's tracing field relies on them. mesh writes and reads the two
// text forms such tracers use: Zipkin's B3 headers and Jaeger's
// uber-trace-id ("trace:span:parent:flags", hex).
const (
	tracingPrefix = "$tracing$"
	b3TraceID     = tracingPrefix + "x-b3-traceid"
	b3SpanID      = tracingPrefix + "x-b3-spanid"
	b3ParentID    = tracingPrefix + "x-b3-parentspanid"
	b3Sampled     = tracingPrefix + "x-b3-sampled"
	uberTraceID   = tracingPrefix + "uber-trace-id"
)

// addTracingHeaders writes t into JSON application headers h.
func addTracingHeaders(h map[string]string, t frame.Tracing) {
	if t.TraceID == 0 {
		return
	}
	sampled := "0"
	if t.Sampled() {
		sampled = "1"
	}
	h[b3TraceID] = fmt.Sprintf("%016x", t.TraceID)
	h[b3SpanID] = fmt.Sprintf("%016x", t.SpanID)
	if t.ParentID != 0 {
		h[b3ParentID] = fmt.Sprintf("%016x", t.ParentID)
	}
	h[b3Sampled] = sampled
	h[uberTraceID] = fmt.Sprintf("%x:%x:%x:%s", t.TraceID, t.SpanID, t.ParentID, sampled)
}

// headerParent is the parent of a JSON call's server span: the frame's
// tracing field, unless the $tracing$ headers name another trace. A caller
// whose tracer cannot fill the frame's field (tchannel-go then sends random
// unsampled ids) still says in the headers. The headers are parsed only when
// they do not already show the frame's trace id (mesh's own callers write
// the same context in both).
func headerParent(arg2 []byte, f frame.Tracing) frame.Tracing {
	if f.TraceID != 0 {
		var id [16]byte
		hex.Encode(id[:], binary.BigEndian.AppendUint64(nil, f.TraceID))
		if bytes.Contains(arg2, id[:]) {
			return f
		}
	}
	if t, ok := tracingFromHeaders(arg2); ok && t.TraceID != f.TraceID {
		return t
	}
	return f
}

// tracingFromHeaders reads a trace context from JSON application headers
// arg2 (B3 first, then uber-trace-id), if they carry one. 128-bit trace
// ids keep their low 64 bits, which is what the frame carries.
func tracingFromHeaders(arg2 []byte) (frame.Tracing, bool) {
	if !bytes.Contains(arg2, []byte(tracingPrefix)) {
		return frame.Tracing{}, false
	}
	var h map[string]string
	if json.Unmarshal(arg2, &h) != nil {
		return frame.Tracing{}, false
	}
	var t frame.Tracing
	if tid, sid := hex64(h[b3TraceID]), hex64(h[b3SpanID]); tid != 0 && sid != 0 {
		t = frame.Tracing{TraceID: tid, SpanID: sid, ParentID: hex64(h[b3ParentID])}
		if s := h[b3Sampled]; s == "1" || s == "true" || h[tracingPrefix+"x-b3-flags"] == "1" {
			t.Flags = frame.TracingSampled
		}
		return t, true
	}
	parts := strings.Split(h[uberTraceID], ":")
	if len(parts) != 4 {
		return frame.Tracing{}, false
	}
	t = frame.Tracing{TraceID: hex64(parts[0]), SpanID: hex64(parts[1]), ParentID: hex64(parts[2])}
	if flags, err := strconv.ParseUint(parts[3], 16, 8); err == nil && flags&1 == 1 {
		t.Flags = frame.TracingSampled
	}
	return t, t.TraceID != 0 && t.SpanID != 0
}

// hex64 parses a hex id, keeping the low 64 bits of a longer one; 0 when
// it is not hex.
func hex64(s string) uint64 {
	if len(s) > 16 {
		s = s[len(s)-16:]
	}
	v, err := strconv.ParseUint(s, 16, 64)
	if err != nil {
		return 0
	}
	return v
}
