package tracing

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// zipkinExporter posts spans to a Zipkin v2 endpoint as JSON.
//
// Spans are written as JSON when they end (appendSpan), exactly as
// OpenTelemetry's Zipkin exporter maps its SDK's spans (the OTLP → Zipkin
// rules of the specification; a test holds the two equal on random spans).
// The official exporter goes through zipkin-go's model and encoding/json,
// about 10 µs and 38 allocations per span, more than a whole call costs.
type zipkinExporter struct {
	url    string
	client *http.Client
}

func newZipkinExporter(url string) *zipkinExporter {
	// A batch is a few hundred KiB: written through the transport's default
	// 4 KiB buffer it would take a hundred write calls.
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.WriteBufferSize = 256 << 10
	return &zipkinExporter{url: url, client: &http.Client{Timeout: 5 * time.Second, Transport: t}}
}

// export posts one batch: a JSON array of spans.
func (e *zipkinExporter) export(ctx context.Context, batch []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.url, bytes.NewReader(batch))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := e.client.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	io.Copy(io.Discard, res.Body) // so the connection is reused
	if res.StatusCode/100 != 2 {
		return fmt.Errorf("zipkin endpoint %s answered %s", e.url, res.Status)
	}
	return nil
}

// appendSpan writes one span in Zipkin v2 JSON.
func appendSpan(b []byte, s *span) []byte {
	b = appendHead(b, s.sc.TraceID(), s.sc.SpanID(), s.parent, s.kind, s.name, s.start, s.end, &s.tracer.parts)
	b = appendRemoteEndpoint(b, s)
	b = appendEvents(b, s.events)
	return appendTags(b, s)
}

// appendHead writes what every span has: ids, kind, name, times, and the
// process as local endpoint.
func appendHead(b []byte, tid trace.TraceID, sid, pid trace.SpanID, kind trace.SpanKind, name string, start, end time.Time, parts *jsonParts) []byte {
	b = append(b, `{"traceId":"`...)
	if hi := tid[:8]; !allZero(hi) {
		b = appendHex(b, hi)
	}
	b = appendHex(b, tid[8:])
	b = append(b, `","id":"`...)
	b = appendHex(b, sid[:])
	b = append(b, '"')
	if pid.IsValid() {
		b = append(b, `,"parentId":"`...)
		b = appendHex(b, pid[:])
		b = append(b, '"')
	}
	if k := zipkinKind(kind); k != "" {
		b = append(b, `,"kind":"`...)
		b = append(b, k...)
		b = append(b, '"')
	}
	if name != "" {
		b = append(b, `,"name":`...)
		b = appendLowerString(b, name)
	}
	if !start.IsZero() {
		b = append(b, `,"timestamp":`...)
		b = strconv.AppendInt(b, micros(start), 10)
	}
	if d := end.Sub(start); d > 0 {
		b = append(b, `,"duration":`...)
		b = strconv.AppendInt(b, int64(max(d+500*time.Nanosecond, time.Microsecond)/time.Microsecond), 10)
	}
	return append(b, parts.local...)
}

// appendEvents writes events as Zipkin annotations.
func appendEvents(b []byte, events []Event) []byte {
	if len(events) == 0 {
		return b
	}
	b = append(b, `,"annotations":[`...)
	for i := range events {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"timestamp":`...)
		b = strconv.AppendInt(b, micros(events[i].Time), 10)
		b = append(b, `,"value":`...)
		b = appendString(b, annotation(events[i]))
		b = append(b, '}')
	}
	return append(b, ']')
}

// appendTags writes the span's attributes, then its process's service name
// (OpenTelemetry's resource), then its status and instrumentation scope, as
// Zipkin tags: later keys win, as in a map, and keys come out sorted.
func appendTags(b []byte, s *span) []byte {
	b = append(b, s.tracer.parts.tags...)
	attrs := s.attrs
next:
	for i, kv := range attrs {
		if s.setLater(kv.Key) {
			continue
		}
		for _, later := range attrs[i+1:] {
			if later.Key == kv.Key {
				continue next // the last value of a key wins
			}
		}
		b = appendTag(b, string(kv.Key), tagValue(kv.Value))
	}
	switch s.status {
	case codes.Error:
		b = appendTag(b, "otel.status_code", "ERROR")
		b = appendTag(b, "error", s.desc)
	case codes.Ok:
		b = appendTag(b, "otel.status_code", "OK")
	}
	switch {
	case s.scope == scope && s.version == "":
		b = append(b, meshScopeTag...)
	case s.scope != "":
		b = appendTag(b, "otel.scope.name", s.scope)
		if s.version != "" {
			b = appendTag(b, "otel.scope.version", s.version)
		}
	}
	return append(b, "}}"...)
}

// setLater reports whether a tag key is set after the span's attributes
// (by the process, the status or the scope), so an attribute of that name
// does not show. "error" is the status's alone: only an error status makes
// a span an error in Zipkin.
func (s *span) setLater(k attribute.Key) bool {
	switch k {
	case "service.name", "error":
		return true
	case "otel.status_code":
		return s.status != codes.Unset
	case "otel.scope.name":
		return s.scope != ""
	case "otel.scope.version":
		return s.scope != "" && s.version != ""
	}
	return false
}

// jsonParts are the pieces of a span's JSON that are the same for every
// span of a process, written once.
type jsonParts struct {
	local []byte // the local endpoint, if the process has a name
	tags  []byte // the start of the tags, with the process's service name
}

func newJSONParts(service string) jsonParts {
	var p jsonParts
	if service != "" {
		p.local = append(appendLowerString([]byte(`,"localEndpoint":{"serviceName":`), service), '}')
	}
	p.tags = appendString([]byte(`,"tags":{"service.name":`), service)
	return p
}

var meshScopeTag = appendTag(nil, "otel.scope.name", scope)

// appendTag writes ,"k":"v" (v as text or as bytes).
func appendTag[T string | []byte](b []byte, k string, v T) []byte {
	b = append(b, ',')
	b = appendString(b, k)
	b = append(b, ':')
	return appendString(b, v)
}

func zipkinKind(k trace.SpanKind) string {
	switch k {
	case trace.SpanKindServer:
		return "SERVER"
	case trace.SpanKindClient:
		return "CLIENT"
	case trace.SpanKindProducer:
		return "PRODUCER"
	case trace.SpanKindConsumer:
		return "CONSUMER"
	}
	return ""
}

// remoteRank orders the attributes that may name a client's or producer's
// remote endpoint, most telling first (the specification's table).
var remoteRank = map[attribute.Key]int{
	"peer.service":          1,
	"server.address":        2,
	"net.peer.name":         3,
	"network.peer.address":  4,
	"server.socket.domain":  5,
	"server.socket.address": 6,
	"net.sock.peer.name":    7,
	"net.sock.peer.addr":    8,
	"peer.hostname":         9,
	"peer.address":          10,
	"db.name":               11,
}

// remotePort names the port attribute that goes with an address attribute.
var remotePort = map[attribute.Key]attribute.Key{
	"network.peer.address":  "network.peer.port",
	"server.socket.address": "server.socket.port",
	"net.sock.peer.addr":    "net.sock.peer.port",
}

func appendRemoteEndpoint(b []byte, s *span) []byte {
	if s.kind != trace.SpanKindClient && s.kind != trace.SpanKindProducer {
		return b
	}
	attrs := s.attrs
	best, bestRank := attribute.KeyValue{}, 0
	for _, kv := range attrs {
		// A key set twice counts with its last value, as in the SDK.
		if r, ok := remoteRank[kv.Key]; ok && (bestRank == 0 || r < bestRank || kv.Key == best.Key) {
			best, bestRank = kv, r
		}
	}
	if bestRank == 0 {
		return b
	}
	v := best.Value.AsString()
	portKey, isAddr := remotePort[best.Key]
	if !isAddr {
		if v == "" {
			return b
		}
		b = append(b, `,"remoteEndpoint":{"serviceName":`...)
		b = appendLowerString(b, v)
		return append(b, '}')
	}
	ip := net.ParseIP(strings.Clone(v)) // a copy: ParseIP would make the span's attributes escape
	if ip == nil {
		return b
	}
	b = append(b, `,"remoteEndpoint":{`...)
	if ip.To4() != nil {
		b = append(b, `"ipv4":"`...)
	} else {
		b = append(b, `"ipv6":"`...)
	}
	b = append(b, ip.String()...)
	b = append(b, '"')
	var port uint64
	for _, kv := range attrs {
		if kv.Key == portKey {
			port, _ = strconv.ParseUint(kv.Value.Emit(), 10, 16)
		}
	}
	if port != 0 {
		b = append(b, `,"port":`...)
		b = strconv.AppendUint(b, port, 10)
	}
	return append(b, '}')
}

// annotation is an event as Zipkin shows it: its name, and its attributes
// as a JSON object after a colon.
func annotation(ev Event) string {
	if len(ev.Attrs) == 0 {
		return ev.Name
	}
	attrs := slices.Clone(ev.Attrs)
	slices.SortStableFunc(attrs, func(a, b attribute.KeyValue) int { return strings.Compare(string(a.Key), string(b.Key)) })
	b := make([]byte, 0, 64+len(ev.Name))
	b = append(b, ev.Name...)
	b = append(b, ": {"...)
	n := 0
	for i, kv := range attrs {
		if i+1 < len(attrs) && attrs[i+1].Key == kv.Key {
			continue // the last of a repeated key wins
		}
		if n > 0 {
			b = append(b, ',')
		}
		n++
		b = appendString(b, string(kv.Key))
		b = append(b, ':')
		var ok bool
		if b, ok = appendJSONValue(b, kv.Value); !ok {
			return ev.Name // not representable in JSON (NaN, ±Inf)
		}
	}
	return string(append(b, '}'))
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

// tagValue is an attribute's value as a Zipkin tag: scalars as text, lists
// as JSON arrays.
func tagValue(v attribute.Value) string {
	switch v.Type() {
	case attribute.STRING:
		return v.AsString()
	case attribute.BOOLSLICE, attribute.INT64SLICE, attribute.FLOAT64SLICE, attribute.STRINGSLICE:
		js, _ := json.Marshal(v.AsInterface())
		return string(js)
	}
	return v.Emit()
}

func micros(t time.Time) int64 { return t.Round(time.Microsecond).UnixNano() / 1e3 }

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

// appendLowerString writes s lowercased, as zipkin-go lowercases span and
// service names.
func appendLowerString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= utf8.RuneSelf || 'A' <= c && c <= 'Z' {
			return appendString(b, strings.ToLower(s))
		}
	}
	return appendString(b, s)
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
