package frame

import "encoding/binary"

// TracingSize is the size of the tracing field in call, cancel, claim and
// error frames.
const TracingSize = 25

// TracingSampled is the tracing flag that marks a trace as sampled.
const TracingSampled = 0x01

// Tracing is the 25-byte Zipkin-style tracing field: spanid, parentid,
// traceid (8 bytes each) and a flags byte. All zero means "no trace".
type Tracing struct {
	SpanID   uint64
	ParentID uint64
	TraceID  uint64
	Flags    byte
}

// Sampled reports whether the trace is marked for recording.
func (t Tracing) Sampled() bool { return t.Flags&TracingSampled != 0 }

func (t Tracing) appendTo(b []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, t.SpanID)
	b = binary.BigEndian.AppendUint64(b, t.ParentID)
	b = binary.BigEndian.AppendUint64(b, t.TraceID)
	return append(b, t.Flags)
}

func (c *cursor) tracing() Tracing {
	return Tracing{
		SpanID:   c.u64("tracing spanid"),
		ParentID: c.u64("tracing parentid"),
		TraceID:  c.u64("tracing traceid"),
		Flags:    c.u8("tracing flags"),
	}
}

// Put writes the 25-byte field into b, as in a frame being rewritten.
func (t Tracing) Put(b []byte) { t.appendTo(b[:0:TracingSize]) }

// TracingOffset is where the tracing field starts in a call req or call res
// frame: after the 16-byte header, the flags byte and the ttl (call req) or
// the code (call res).
const (
	CallReqTracingOffset = HeaderSize + 1 + 4
	CallResTracingOffset = HeaderSize + 1 + 1
)
