package tracing

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
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

// The encodings of Zipkin's v2 span API (POST /api/v2/spans).
const (
	// EncodingProto is zipkin.proto's ListOfSpans: about a third smaller
	// and cheaper to write than JSON. Zipkin (2.8 on), Jaeger and the
	// OpenTelemetry Collector's Zipkin receiver accept it.
	EncodingProto = "proto"
	// EncodingJSON is a JSON array of spans, which every Zipkin-compatible
	// backend accepts.
	EncodingJSON = "json"
)

// zipkinExporter posts batches of spans to a Zipkin v2 endpoint.
type zipkinExporter struct {
	url, contentType string
	client           *http.Client
}

func newZipkinExporter(url, contentType string) *zipkinExporter {
	// A batch is a few hundred KiB: written through the transport's default
	// 4 KiB buffer it would take a hundred write calls.
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.WriteBufferSize = 256 << 10
	return &zipkinExporter{url: url, contentType: contentType, client: &http.Client{Timeout: 5 * time.Second, Transport: t}}
}

// export posts one batch, as encoder.list made it.
func (e *zipkinExporter) export(ctx context.Context, batch []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.url, bytes.NewReader(batch))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", e.contentType)
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

// zspan is one finished span as Zipkin shows it, whichever encoding
// writes it. Spans and Records become zspans exactly as OpenTelemetry's
// Zipkin exporter maps its SDK's spans (the OTLP → Zipkin rules of the
// specification; tests hold the two equal on random spans). The official
// exporter goes through zipkin-go's model and encoding/json, about 10 µs and
// 38 allocations per span, more than a whole call costs.
type zspan struct {
	tid        trace.TraceID
	sid, pid   trace.SpanID
	kind       trace.SpanKind
	name       string
	start, end time.Time
	// The remote endpoint of a client or producer span: a service name,
	// or else an address and port.
	remote     string
	remoteIP   net.IP
	remotePort uint64
	events     []Event
	// tags follow the process's service.name, keys unique and UTF-8; then
	// come a failed Record's error tags and, if meshScope, mesh's own
	// otel.scope.name.
	tags []Tag
	// code and message, for a Record that failed (Record.Code): the tags
	// Error sets on a span. Kept apart from tags so that no text of the
	// Record is copied where the encoders could make it escape.
	code, message string
	meshScope     bool
}

// zipkin maps an ended span, its tags appended to tags (which may have
// room for them).
func (s *span) zipkin(tags []Tag) zspan {
	z := zspan{tid: s.sc.TraceID(), sid: s.sc.SpanID(), pid: s.parent, kind: s.kind, name: s.name,
		start: s.start, end: s.end, events: s.events}
	if s.kind == trace.SpanKindClient || s.kind == trace.SpanKindProducer {
		z.remote, z.remoteIP, z.remotePort = remoteEndpoint(s.attrs)
	}
next:
	for i, kv := range s.attrs {
		if s.setLater(kv.Key) {
			continue
		}
		for _, later := range s.attrs[i+1:] {
			if later.Key == kv.Key {
				continue next // the last value of a key wins
			}
		}
		tags = append(tags, Tag{Key: validUTF8(string(kv.Key)), Value: tagValue(kv.Value)})
	}
	switch s.status {
	case codes.Error:
		tags = append(tags, Tag{Key: "otel.status_code", Value: "ERROR"}, Tag{Key: "error", Value: s.desc})
	case codes.Ok:
		tags = append(tags, Tag{Key: "otel.status_code", Value: "OK"})
	}
	switch {
	case s.scope == scope && s.version == "":
		z.meshScope = true
	case s.scope != "":
		tags = append(tags, Tag{Key: "otel.scope.name", Value: s.scope})
		if s.version != "" {
			tags = append(tags, Tag{Key: "otel.scope.version", Value: s.version})
		}
	}
	z.tags = tags
	return z
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

// encoder writes spans in one of Zipkin's encodings, with what every span
// of a process shares written once.
type encoder struct {
	proto   bool
	local   []byte // the local endpoint, if the process has a name
	service []byte // the service.name tag (in JSON, the start of the tags with it)
	scope   []byte // mesh's otel.scope.name tag
}

func newEncoder(encoding, service string) (encoder, error) {
	switch encoding {
	case EncodingProto, "":
		return newProtoEncoder(service), nil
	case EncodingJSON:
		return newJSONEncoder(service), nil
	}
	return encoder{}, fmt.Errorf("zipkin encoding %q: want %q or %q", encoding, EncodingProto, EncodingJSON)
}

func (e *encoder) contentType() string {
	if e.proto {
		return "application/x-protobuf"
	}
	return "application/json"
}

// span writes one span.
func (e *encoder) span(b []byte, z *zspan) []byte {
	if e.proto {
		return e.appendProto(b, z)
	}
	return e.appendJSON(b, z)
}

// entry appends one written span to a batch being gathered: after a comma
// in JSON, as a length-prefixed ListOfSpans field in proto.
func (e *encoder) entry(batch, span []byte) []byte {
	if e.proto {
		batch = append(batch, pbSpans)
		batch = binary.AppendUvarint(batch, uint64(len(span)))
	} else {
		batch = append(batch, ',')
	}
	return append(batch, span...)
}

// list finishes a gathered batch of at least one span for the wire.
func (e *encoder) list(batch []byte) []byte {
	if e.proto {
		return batch
	}
	batch[0] = '[' // the first span's comma
	return append(batch, ']')
}

// zipkinKind is Zipkin's name of a span kind; internal spans have none.
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

// remoteEndpoint is the remote endpoint the attributes of a client or
// producer span name: a service, or an address (an IP) and port.
func remoteEndpoint(attrs []attribute.KeyValue) (service string, ip net.IP, port uint64) {
	best, bestRank := attribute.KeyValue{}, 0
	for _, kv := range attrs {
		// A key set twice counts with its last value, as in the SDK.
		if r, ok := remoteRank[kv.Key]; ok && (bestRank == 0 || r < bestRank || kv.Key == best.Key) {
			best, bestRank = kv, r
		}
	}
	if bestRank == 0 {
		return "", nil, 0
	}
	v := best.Value.AsString()
	portKey, isAddr := remotePort[best.Key]
	if !isAddr {
		return v, nil, 0
	}
	ip = net.ParseIP(strings.Clone(v)) // a copy: ParseIP would make the span's attributes escape
	if ip == nil {
		return "", nil, 0
	}
	for _, kv := range attrs {
		if kv.Key == portKey {
			port, _ = strconv.ParseUint(kv.Value.Emit(), 10, 16)
		}
	}
	return "", ip, port
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

// durationMicros is a span's duration as Zipkin has it: whole microseconds,
// rounded, at least one; zero for a span that took no time.
func durationMicros(start, end time.Time) int64 {
	d := end.Sub(start)
	if d <= 0 {
		return 0
	}
	return int64(max(d+500*time.Nanosecond, time.Microsecond) / time.Microsecond)
}

// lower is s lowercased, as zipkin-go lowercases span and service names.
func lower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= utf8.RuneSelf || 'A' <= c && c <= 'Z' {
			return strings.ToLower(s)
		}
	}
	return s
}
