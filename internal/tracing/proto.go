package tracing

import (
	"encoding/binary"
	"strings"
	"unicode/utf8"

	"go.opentelemetry.io/otel/trace"
)

// Field keys (number << 3 | wire type) of zipkin.proto, Zipkin's proto3
// model: ListOfSpans, Span, Endpoint, Annotation and a tags map entry.
const (
	pbSpans = 1<<3 | 2

	pbTraceID     = 1<<3 | 2
	pbParentID    = 2<<3 | 2
	pbID          = 3<<3 | 2
	pbKind        = 4<<3 | 0
	pbName        = 5<<3 | 2
	pbTimestamp   = 6<<3 | 1
	pbDuration    = 7<<3 | 0
	pbLocal       = 8<<3 | 2
	pbRemote      = 9<<3 | 2
	pbAnnotations = 10<<3 | 2
	pbTags        = 11<<3 | 2

	pbServiceName = 1<<3 | 2
	pbIPv4        = 2<<3 | 2
	pbIPv6        = 3<<3 | 2
	pbPort        = 4<<3 | 0

	pbAnnotationTime  = 1<<3 | 1
	pbAnnotationValue = 2<<3 | 2

	pbKey   = 1<<3 | 2
	pbValue = 2<<3 | 2
)

func newProtoEncoder(service string) encoder {
	e := encoder{proto: true, scope: appendProtoTag(nil, "otel.scope.name", scope)}
	if name := validUTF8(lower(service)); name != "" {
		e.local = append(e.local, pbLocal)
		e.local = binary.AppendUvarint(e.local, uint64(fieldLen(len(name))))
		e.local = appendProtoString(e.local, pbServiceName, name)
	}
	e.service = appendProtoTag(nil, "service.name", validUTF8(service))
	return e
}

// appendProto writes one span as a zipkin.proto Span message (without the
// key and length that make it an element of ListOfSpans: encoder.entry).
// proto3 strings must be UTF-8: invalid bytes become U+FFFD, as in JSON.
func (e *encoder) appendProto(b []byte, z *zspan) []byte {
	// Trace ids are always 16 bytes: zipkin-go's decoder, which the
	// OpenTelemetry Collector uses, takes no other length.
	b = append(b, pbTraceID, 16)
	b = append(b, z.tid[:]...)
	if z.pid.IsValid() {
		b = append(b, pbParentID, 8)
		b = append(b, z.pid[:]...)
	}
	b = append(b, pbID, 8)
	b = append(b, z.sid[:]...)
	if k := protoKind(z.kind); k != 0 {
		b = append(b, pbKind, k)
	}
	if z.name != "" {
		b = appendProtoString(b, pbName, validUTF8(lower(z.name)))
	}
	if !z.start.IsZero() {
		b = append(b, pbTimestamp)
		b = binary.LittleEndian.AppendUint64(b, uint64(micros(z.start)))
	}
	if d := durationMicros(z.start, z.end); d > 0 {
		b = append(b, pbDuration)
		b = binary.AppendUvarint(b, uint64(d))
	}
	b = append(b, e.local...)
	switch {
	case z.remote != "":
		name := validUTF8(lower(z.remote))
		b = append(b, pbRemote)
		b = binary.AppendUvarint(b, uint64(fieldLen(len(name))))
		b = appendProtoString(b, pbServiceName, name)
	case z.remoteIP != nil:
		key, ip := byte(pbIPv6), z.remoteIP.To16()
		if ip4 := z.remoteIP.To4(); ip4 != nil {
			key, ip = pbIPv4, ip4
		}
		n := fieldLen(len(ip))
		if z.remotePort != 0 {
			n += 1 + uvarintLen(z.remotePort)
		}
		b = append(b, pbRemote)
		b = binary.AppendUvarint(b, uint64(n))
		b = appendProtoString(b, key, []byte(ip))
		if z.remotePort != 0 {
			b = append(b, pbPort)
			b = binary.AppendUvarint(b, z.remotePort)
		}
	}
	for i := range z.events {
		value := validUTF8(annotation(z.events[i]))
		b = append(b, pbAnnotations)
		b = binary.AppendUvarint(b, uint64(1+8+fieldLen(len(value))))
		b = append(b, pbAnnotationTime)
		b = binary.LittleEndian.AppendUint64(b, uint64(micros(z.events[i].Time)))
		b = appendProtoString(b, pbAnnotationValue, value)
	}
	b = append(b, e.service...)
	for i := range z.tags {
		switch t := &z.tags[i]; {
		case t.Text == nil:
			b = appendProtoTag(b, t.Key, validUTF8(t.Value))
		case utf8.Valid(t.Text):
			b = appendProtoTag(b, t.Key, t.Text)
		default:
			b = appendProtoTag(b, t.Key, validUTF8(string(t.Text)))
		}
	}
	if z.code != "" { // as Error on a span: the code, and the status saying so
		b = appendProtoTag(b, "mesh.error_message", validUTF8(z.message))
		b = appendProtoTag(b, "otel.status_code", "ERROR")
		b = appendProtoTag(b, "error", validUTF8(z.code+": "+z.message)) // failures only
	}
	if z.meshScope {
		b = append(b, e.scope...)
	}
	return b
}

// appendProtoTag writes one entry of the tags map.
func appendProtoTag[T string | []byte](b []byte, k string, v T) []byte {
	b = append(b, pbTags)
	b = binary.AppendUvarint(b, uint64(fieldLen(len(k))+fieldLen(len(v))))
	b = appendProtoString(b, pbKey, k)
	return appendProtoString(b, pbValue, v)
}

// appendProtoString writes a length-delimited field: key, length, bytes.
func appendProtoString[T string | []byte](b []byte, key byte, s T) []byte {
	b = append(b, key)
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// fieldLen is the size of a length-delimited field of n bytes.
func fieldLen(n int) int { return 1 + uvarintLen(uint64(n)) + n }

func uvarintLen(v uint64) int {
	n := 1
	for ; v >= 0x80; v >>= 7 {
		n++
	}
	return n
}

// protoKind is zipkin.proto's Span.Kind of a span kind (0: unspecified).
func protoKind(k trace.SpanKind) byte {
	switch k {
	case trace.SpanKindClient:
		return 1
	case trace.SpanKindServer:
		return 2
	case trace.SpanKindProducer:
		return 3
	case trace.SpanKindConsumer:
		return 4
	}
	return 0
}

// validUTF8 is s with each byte that is not UTF-8 replaced by U+FFFD, as
// encoding/json writes such a string (strings.ToValidUTF8 would replace a
// run of them by one).
func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b.WriteString("\uFFFD")
		} else {
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}
