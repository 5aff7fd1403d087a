package tracing

import (
	"encoding/json"
	"math"
	"strconv"
	"unicode/utf8"

	"go.opentelemetry.io/otel/attribute"
)

func newJSONEncoder(service string) encoder {
	e := encoder{scope: appendTag(nil, "otel.scope.name", scope)}
	if service != "" {
		e.local = append(appendString([]byte(`,"localEndpoint":{"serviceName":`), lower(service)), '}')
	}
	e.service = appendString([]byte(`,"tags":{"service.name":`), service)
	return e
}

// appendJSON writes one span as Zipkin v2 JSON.
func (e *encoder) appendJSON(b []byte, z *zspan) []byte {
	b = append(b, `{"traceId":"`...)
	if hi := z.tid[:8]; !allZero(hi) {
		b = appendHex(b, hi)
	}
	b = appendHex(b, z.tid[8:])
	b = append(b, `","id":"`...)
	b = appendHex(b, z.sid[:])
	b = append(b, '"')
	if z.pid.IsValid() {
		b = append(b, `,"parentId":"`...)
		b = appendHex(b, z.pid[:])
		b = append(b, '"')
	}
	if k := zipkinKind(z.kind); k != "" {
		b = append(b, `,"kind":"`...)
		b = append(b, k...)
		b = append(b, '"')
	}
	if z.name != "" {
		b = append(b, `,"name":`...)
		b = appendString(b, lower(z.name))
	}
	if !z.start.IsZero() {
		b = append(b, `,"timestamp":`...)
		b = strconv.AppendInt(b, micros(z.start), 10)
	}
	if d := durationMicros(z.start, z.end); d > 0 {
		b = append(b, `,"duration":`...)
		b = strconv.AppendInt(b, d, 10)
	}
	b = append(b, e.local...)
	switch {
	case z.remote != "":
		b = append(b, `,"remoteEndpoint":{"serviceName":`...)
		b = appendString(b, lower(z.remote))
		b = append(b, '}')
	case z.remoteIP != nil:
		b = append(b, `,"remoteEndpoint":{`...)
		if z.remoteIP.To4() != nil {
			b = append(b, `"ipv4":"`...)
		} else {
			b = append(b, `"ipv6":"`...)
		}
		b = append(b, z.remoteIP.String()...)
		b = append(b, '"')
		if z.remotePort != 0 {
			b = append(b, `,"port":`...)
			b = strconv.AppendUint(b, z.remotePort, 10)
		}
		b = append(b, '}')
	}
	if len(z.events) > 0 {
		b = append(b, `,"annotations":[`...)
		for i := range z.events {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"timestamp":`...)
			b = strconv.AppendInt(b, micros(z.events[i].Time), 10)
			b = append(b, `,"value":`...)
			b = appendString(b, annotation(z.events[i]))
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	b = append(b, e.service...)
	for i := range z.tags {
		if t := &z.tags[i]; t.Text != nil {
			b = appendTag(b, t.Key, t.Text)
		} else {
			b = appendTag(b, t.Key, t.Value)
		}
	}
	if z.code != "" { // as Error on a span: the code, and the status saying so
		b = appendTag(b, "mesh.error_message", z.message)
		b = appendTag(b, "otel.status_code", "ERROR")
		b = appendTag(b, "error", z.code+": "+z.message) // failures only: the concatenation may allocate
	}
	if z.meshScope {
		b = append(b, e.scope...)
	}
	return append(b, "}}"...)
}

// appendTag writes ,"k":"v" (v as text or as bytes).
func appendTag[T string | []byte](b []byte, k string, v T) []byte {
	b = append(b, ',')
	b = appendString(b, k)
	b = append(b, ':')
	return appendString(b, v)
}

func appendJSONValue(b []byte, v attribute.Value) ([]byte, bool) {
	switch v.Type() {
	case attribute.BOOL:
		return strconv.AppendBool(b, v.AsBool()), true
	case attribute.INT64:
		return strconv.AppendInt(b, v.AsInt64(), 10), true
	case attribute.FLOAT64:
		return appendFloat(b, v.AsFloat64())
	case attribute.STRING:
		return appendString(b, v.AsString()), true
	}
	js, err := json.Marshal(v.AsInterface())
	return append(b, js...), err == nil
}

// appendFloat writes f as encoding/json does (ES6 number formatting).
func appendFloat(b []byte, f float64) ([]byte, bool) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return b, false
	}
	abs := math.Abs(f)
	format := byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	n := len(b)
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// e-09 → e-9, as JavaScript writes exponents
		if m := len(b) - n; m >= 4 && b[len(b)-4] == 'e' && b[len(b)-3] == '-' && b[len(b)-2] == '0' {
			b[len(b)-2] = b[len(b)-1]
			b = b[:len(b)-1]
		}
	}
	return b, true
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

const hexDigits = "0123456789abcdef"

func appendHex(b, src []byte) []byte {
	for _, c := range src {
		b = append(b, hexDigits[c>>4], hexDigits[c&0xf])
	}
	return b
}

// plain marks the bytes a JSON string holds as they are: ASCII other than
// controls, quotes, backslashes and <, >, & (escaped as encoding/json does).
var plain = func() (t [256]uint8) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		if c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
			t[c] = 1
		}
	}
	return t
}()

// appendString writes s as a JSON string with encoding/json's escaping:
// control characters, quotes, backslashes, <, >, &, U+2028 and U+2029 are
// escaped, and invalid UTF-8 becomes U+FFFD.
func appendString[T string | []byte](b []byte, s T) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		// Most text is plain: skip it four bytes at a time.
		for i+4 <= len(s) && plain[s[i]]&plain[s[i+1]]&plain[s[i+2]]&plain[s[i+3]] == 1 {
			i += 4
		}
		if i == len(s) {
			break
		}
		c := s[i]
		if c < utf8.RuneSelf {
			if plain[c] == 1 {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(string(s[i:min(i+utf8.UTFMax, len(s))]))
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
