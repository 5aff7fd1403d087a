package tracing

import (
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	zkmodel "github.com/openzipkin/zipkin-go/model"
	"github.com/openzipkin/zipkin-go/proto/zipkin_proto3"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/zipkin"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/meshrpc/mesh/frame"
)

// collector keeps every span that ends.
type collector struct{ spans []sdktrace.ReadOnlySpan }

func (c *collector) OnStart(context.Context, sdktrace.ReadWriteSpan) {}
func (c *collector) OnEnd(s sdktrace.ReadOnlySpan)                   { c.spans = append(c.spans, s) }
func (c *collector) Shutdown(context.Context) error                  { return nil }
func (c *collector) ForceFlush(context.Context) error                { return nil }

// seq makes ids 1, 2, 3, … for both recorders, so the same calls give the
// same ids.
type seq struct{ n uint64 }

func (s *seq) next() uint64 { s.n++; return s.n }
func (s *seq) NewIDs(context.Context) (trace.TraceID, trace.SpanID) {
	var tid trace.TraceID
	binary.BigEndian.PutUint64(tid[8:], s.next())
	return tid, s.NewSpanID(context.Background(), tid)
}
func (s *seq) NewSpanID(context.Context, trace.TraceID) trace.SpanID {
	var sid trace.SpanID
	binary.BigEndian.PutUint64(sid[:], s.next())
	return sid
}

// recordRandom drives provider through OpenTelemetry's API with what real
// spans carry and what only a careless caller would put there: every kind,
// every attribute type, repeated keys, peer addresses, events, errors,
// statuses set twice, names in any case and any bytes.
func recordRandom(p trace.TracerProvider, seed uint64, n int) {
	r := rand.New(rand.NewPCG(seed, 1))
	str := func() string {
		pieces := []string{"", "echo", "Echo::Get", "ÄÖÜ", "a\"b\\c", "<tag>&", "\n\t\x01\b", "\xff\xfe", "\u2028", "日本", "x y", "peer"}
		return pieces[r.IntN(len(pieces))] + pieces[r.IntN(len(pieces))]
	}
	keys := []attribute.Key{"mesh.service", "error", "peer.service", "server.address", "network.peer.address",
		"network.peer.port", "peer.address", "peer.hostname", "net.sock.peer.addr", "net.sock.peer.port", "db.name", "k"}
	value := func(k attribute.Key) attribute.KeyValue {
		switch k {
		case "network.peer.address", "net.sock.peer.addr", "peer.address":
			ips := []string{"10.1.2.3", "::1", "fe80::1", "not-an-ip", ""}
			return k.String(ips[r.IntN(len(ips))])
		case "network.peer.port", "net.sock.peer.port":
			return k.Int(r.IntN(70000))
		}
		switch r.IntN(8) {
		case 0:
			return k.Bool(r.IntN(2) == 0)
		case 1:
			return k.Int64(r.Int64() - math.MaxInt64/2)
		case 2:
			fs := []float64{0, 1.5, -2e-7, 3e21, 1e20, 123456.789, math.NaN(), math.Inf(1)}
			return k.Float64(fs[r.IntN(len(fs))])
		case 3:
			return k.StringSlice([]string{str(), str()})
		case 4:
			return k.Int64Slice([]int64{1, -2})
		case 5:
			return k.BoolSlice([]bool{true})
		case 6:
			return k.Float64Slice([]float64{0.5, 1e-9})
		}
		return k.String(str())
	}
	attrs := func() []attribute.KeyValue {
		var kvs []attribute.KeyValue
		for range r.IntN(6) {
			kvs = append(kvs, value(keys[r.IntN(len(keys))]))
		}
		return kvs
	}
	tracers := []trace.Tracer{p.Tracer("github.com/meshrpc/mesh"), p.Tracer("other", trace.WithInstrumentationVersion("v1.2.3"))}
	root := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{15: 9}, SpanID: trace.SpanID{7: 9}, TraceFlags: trace.FlagsSampled, Remote: true})
	parent := trace.ContextWithRemoteSpanContext(context.Background(), root)
	start := time.Unix(1_700_000_000, int64(r.IntN(1e9)))
	codeList := []codes.Code{codes.Unset, codes.Error, codes.Ok}
	for i := range n {
		ctx, span := tracers[r.IntN(len(tracers))].Start(parent, str(), trace.WithSpanKind(trace.SpanKind(r.IntN(6))),
			trace.WithTimestamp(start), trace.WithAttributes(attrs()...))
		for range r.IntN(3) {
			span.AddEvent(str(), trace.WithAttributes(attrs()...), trace.WithTimestamp(start.Add(time.Duration(r.IntN(5000)))))
		}
		span.SetAttributes(attrs()...)
		for range r.IntN(3) {
			span.SetStatus(codeList[r.IntN(3)], str())
		}
		if r.IntN(4) == 0 {
			span.SetName(str())
		}
		if r.IntN(4) == 0 {
			span.RecordError(fmt.Errorf("boom %s", str()), trace.WithTimestamp(start.Add(7)))
		}
		durations := []time.Duration{0, 1, 499, 500, 1499, 1500, 7 * time.Millisecond}
		span.End(trace.WithTimestamp(start.Add(durations[r.IntN(len(durations))])))
		span.SetAttributes(attribute.String("after", "end")) // ignored by both
		if i%3 == 0 {
			parent = ctx
		}
	}
}

// official records spans with OpenTelemetry's SDK and encodes them with
// its Zipkin exporter's model and encoding/json.
func official(t testing.TB, seed uint64, n int) []byte {
	c := &collector{}
	res := resource.NewSchemaless(attribute.String("service.name", "Mesh-Test"))
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(c), sdktrace.WithResource(res), sdktrace.WithIDGenerator(&seq{}))
	recordRandom(tp, seed, n)
	js, err := json.Marshal(zipkin.SpanModels(c.spans))
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// ours records the same spans with mesh's Tracer and encodes them here.
func ours(t testing.TB, encoding string, seed uint64, n int) []byte {
	tr := recorder(t, "Mesh-Test", encoding, (&seq{}).next)
	recordRandom(provider{t: tr}, seed, n)
	batch, _ := tr.queue.take(nil)
	return batch
}

var encodings = []string{EncodingJSON, EncodingProto}

// recorder is a Tracer whose spans stay queued for the test to take.
func recorder(t testing.TB, service, encoding string, ids func() uint64) *Tracer {
	enc, err := newEncoder(encoding, service)
	if err != nil {
		t.Fatal(err)
	}
	return &Tracer{queue: &queue{size: 1 << 30, enc: enc}, ids: ids}
}

// decodeModels decodes a batch as a Zipkin endpoint would: JSON with
// zipkin-go's model, proto with zipkin-go's proto3 decoder (the one the
// OpenTelemetry Collector's Zipkin receiver uses).
func decodeModels(t testing.TB, encoding string, batch []byte) []zkmodel.SpanModel {
	var m []zkmodel.SpanModel
	if encoding == EncodingJSON {
		if err := json.Unmarshal(batch, &m); err != nil {
			t.Fatalf("%v in %s", err, batch)
		}
		return m
	}
	spans, err := zipkin_proto3.ParseSpans(batch, false)
	if err != nil {
		t.Fatalf("%v in %q", err, batch)
	}
	for _, s := range spans {
		if s.Kind == "SPAN_KIND_UNSPECIFIED" { // the proto enum's zero: no kind
			s.Kind = ""
		}
		s.Timestamp = s.Timestamp.Local() // as encoding/json decodes times
		if ep := s.RemoteEndpoint; ep != nil && ep.IPv4 != nil {
			ep.IPv4 = ep.IPv4.To16() // as net.ParseIP gives IPv4 addresses
		}
		for i := range s.Annotations {
			s.Annotations[i].Timestamp = s.Annotations[i].Timestamp.Local()
		}
		m = append(m, *s)
	}
	return m
}

// mesh's spans, written here in either encoding, mean exactly what
// OpenTelemetry's SDK and its Zipkin exporter send for the same API calls:
// both decode to the same zipkin-go model, span by span.
func TestZipkinMatchesOpenTelemetryExporter(t *testing.T) {
	for _, enc := range encodings {
		t.Run(enc, func(t *testing.T) {
			for seed := range uint64(300) {
				want, got := official(t, seed, 20), ours(t, enc, seed, 20)
				if enc == EncodingJSON && !json.Valid(got) {
					t.Fatalf("seed %d: invalid JSON %s", seed, got)
				}
				w, g := decodeModels(t, EncodingJSON, want), decodeModels(t, enc, got)
				if len(w) != len(g) {
					t.Fatalf("seed %d: %d spans, want %d", seed, len(g), len(w))
				}
				// Batches need not keep the order spans ended in.
				byID := func(a, b zkmodel.SpanModel) int { return cmp.Compare(a.ID, b.ID) }
				slices.SortFunc(w, byID)
				slices.SortFunc(g, byID)
				for i := range w {
					if !reflect.DeepEqual(w[i], g[i]) {
						t.Fatalf("seed %d span %d:\nofficial %s\nours     %s", seed, i, js(w[i]), js(g[i]))
					}
				}
			}
		})
	}
}

func js(m zkmodel.SpanModel) string {
	b, _ := json.Marshal(m)
	return fmt.Sprintf("%s (annotations %q)", b, m.Annotations)
}

// Strings come out as encoding/json writes them, whatever their bytes.
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "plain", "a\"b\\c", "<>&", "\x00\x1f\x7f", "\xff", "\u2028\u2029", "日本語", "\xed\xa0\x80"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, _ := json.Marshal(s)
		if got := appendString(nil, s); string(got) != string(want) {
			t.Fatalf("%q: got %s, want %s", s, got, want)
		}
	})
}

// Whatever bytes a span's texts hold, its proto decodes to what its JSON
// does: proto3 strings must be UTF-8, so invalid bytes become U+FFFD, as
// encoding/json writes them.
func FuzzProtoMatchesJSON(f *testing.F) {
	for _, s := range []string{"", "Echo", "a\"b", "\xff", "\xed\xa0\x80", "ÄÖÜ", "\u2028", strings.Repeat("x", 200)} {
		f.Add(s, uint16(4040))
	}
	f.Fuzz(func(t *testing.T, s string, port uint16) {
		start := time.Unix(1_700_000_000, 0)
		var models [2][]zkmodel.SpanModel
		for i, enc := range encodings {
			tr := recorder(t, s, enc, (&seq{}).next)
			tr.Emit(&Record{Name: s, Kind: trace.SpanKindClient, Remote: s, Start: start, End: start.Add(time.Duration(port)),
				Tracing: frame.Tracing{TraceID: 1, SpanID: 2, ParentID: 3}, Tags: []Tag{{Key: "v", Value: s}, {Key: "t", Text: []byte(s)}},
				Events: []Event{{Name: s, Time: start}}, Code: s, Message: s})
			// and a span through the API: attribute keys, scope and peer address
			_, sp := provider{t: tr}.Tracer(s).Start(trace.ContextWithSpanContext(context.Background(), FromFrame(frame.Tracing{TraceID: 1, SpanID: 4, Flags: frame.TracingSampled}, 0)),
				s, trace.WithSpanKind(trace.SpanKindClient), trace.WithTimestamp(start), trace.WithAttributes(attribute.String(s, s),
					attribute.String("network.peer.address", s), attribute.Int("network.peer.port", int(port))))
			sp.End(trace.WithTimestamp(start.Add(time.Millisecond)))
			batch, _ := tr.queue.take(nil)
			models[i] = decodeModels(t, enc, batch)
		}
		if !reflect.DeepEqual(models[0], models[1]) {
			t.Fatalf("%q:\njson  %+v\nproto %+v", s, models[0], models[1])
		}
	})
}

func TestAppendFloatAsEncodingJSON(t *testing.T) {
	for _, f := range []float64{0, -0.0, 1, -1.5, 1e-6, 9.99e-7, 1e-7, 1e20, 1e21, 1.5e300, 5e-324, math.MaxFloat64, 123.456} {
		want, _ := json.Marshal(f)
		got, ok := appendFloat(nil, f)
		if !ok || string(got) != string(want) {
			t.Errorf("%g: got %s, want %s", f, got, want)
		}
	}
}

// A batch reaches the endpoint as one POST in the tracer's encoding; a
// refusing endpoint is an error (the queue counts those spans dropped).
func TestZipkinExporterPosts(t *testing.T) {
	for _, enc := range encodings {
		t.Run(enc, func(t *testing.T) {
			var got []zkmodel.SpanModel
			status := http.StatusAccepted
			tr := recorder(t, "s", enc, nonZero)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if ct := r.Header.Get("Content-Type"); ct != tr.queue.enc.contentType() {
					t.Errorf("content type %q", ct)
				}
				body, _ := io.ReadAll(r.Body)
				got = decodeModels(t, enc, body)
				w.WriteHeader(status)
			}))
			defer srv.Close()
			e := newZipkinExporter(srv.URL+"/api/v2/spans", tr.queue.enc.contentType())
			recordRandom(provider{t: tr}, 7, 50)
			spans, _ := tr.queue.take(nil)
			if err := e.export(context.Background(), spans); err != nil {
				t.Fatal(err)
			}
			if len(got) != 50 || got[0].ID == 0 {
				t.Fatalf("endpoint got %d spans", len(got))
			}
			status = http.StatusBadRequest
			if err := e.export(context.Background(), spans); err == nil || !strings.Contains(err.Error(), "400") {
				t.Fatalf("a refused batch gave %v", err)
			}
		})
	}
}

// BenchmarkSpan is what one meshd hop's span costs, from its record to its
// bytes in the queue, here (Emit, in either encoding) and with
// OpenTelemetry's SDK and Zipkin exporter (a span through the API, then the
// exporter's model and JSON).
func BenchmarkSpan(b *testing.B) {
	hop := func(tr trace.Tracer, ctx context.Context) {
		_, s := tr.Start(ctx, "echo", trace.WithSpanKind(trace.SpanKindServer))
		s.SetAttributes(attribute.String("mesh.service", "bench"), attribute.String("mesh.caller", "client"),
			attribute.String("peer.address", "127.0.0.1:4040"), attribute.String("mesh.hop", "first"),
			attribute.String("mesh.instance", "127.0.0.2:4040"), attribute.String("mesh.result", "ok"))
		s.End()
	}
	root := trace.ContextWithRemoteSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{15: 1}, SpanID: trace.SpanID{7: 1}, TraceFlags: trace.FlagsSampled, Remote: true}))
	for _, enc := range encodings {
		b.Run("mesh-"+enc, func(b *testing.B) {
			tr := recorder(b, "meshd", enc, nonZero)
			ids := frame.Tracing{TraceID: 1, SpanID: 2, ParentID: 1, Flags: frame.TracingSampled}
			var spare []byte
			b.ReportAllocs()
			for b.Loop() {
				now := time.Now()
				tags := [...]Tag{{Key: "mesh.service", Value: "bench"}, {Key: "mesh.caller", Value: "client"},
					{Key: "peer.address", Value: "127.0.0.1:4040"}, {Key: "mesh.hop", Value: "first"},
					{Key: "mesh.instance", Value: "127.0.0.2:4040"}, {Key: "mesh.result", Value: "ok"}}
				tr.Emit(&Record{Name: "echo", Kind: trace.SpanKindServer, Tracing: ids, Start: now, End: now.Add(1234), Tags: tags[:]})
				if tr.queue.n.Load() == batchSize {
					batch, _ := tr.queue.take(spare)
					b.SetBytes(int64(len(batch) / batchSize))
					spare = batch[:0]
				}
			}
		})
	}
	b.Run("opentelemetry", func(b *testing.B) {
		c := &collector{}
		tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(c),
			sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", "meshd"))))
		t := tp.Tracer(scope)
		b.ReportAllocs()
		for b.Loop() {
			hop(t, root)
			if len(c.spans) == batchSize {
				json.Marshal(zipkin.SpanModels(c.spans))
				c.spans = c.spans[:0]
			}
		}
	})
}

// A span written by Emit from a Record, in either encoding, is the span the
// SDK and its Zipkin exporter send for the same facts.
func TestEmitMatchesOpenTelemetryExporter(t *testing.T) {
	for _, enc := range encodings {
		t.Run(enc, func(t *testing.T) { testEmitMatches(t, enc) })
	}
}

func testEmitMatches(t *testing.T, enc string) {
	start := time.Unix(1_700_000_000, 123_456_789)
	attrs := []attribute.KeyValue{attribute.String("mesh.service", "kv"), attribute.String("mesh.hop", "first"),
		attribute.String("mesh.attempts", "2")}
	tags := []Tag{{Key: "mesh.service", Value: "kv"}, {Key: "mesh.hop", Value: "first"}, {Key: "mesh.attempts", Text: []byte("2")}}
	events := []Event{{Name: "retry", Time: start.Add(time.Millisecond), Attrs: []attribute.KeyValue{attribute.String("mesh.cause", "busy")}}}
	for i, code := range []string{"", "busy", "", "timeout"} {
		kind, remote := trace.SpanKindServer, ""
		if i >= 2 { // an SDK client's span: it names its callee
			kind, remote = trace.SpanKindClient, "KV"
		}
		attrs, tags := attrs, tags
		if remote != "" {
			attrs = append(slices.Clone(attrs), attribute.String("peer.service", remote))
			tags = append(slices.Clone(tags), Tag{Key: "peer.service", Value: remote})
		}
		msg := ""
		if code != "" {
			msg = "instance <i1> is busy"
		}
		// mesh: a relay's record, ids from the frame.
		tr := recorder(t, "meshd", enc, nonZero)
		tr.Emit(&Record{Name: "get", Kind: kind, Remote: remote, Start: start, End: start.Add(3 * time.Millisecond),
			Tracing: frame.Tracing{TraceID: 0xaa, SpanID: 0xbb, ParentID: 0xcc, Flags: frame.TracingSampled},
			Tags:    tags, Events: events, Code: code, Message: msg})
		ours, _ := tr.queue.take(nil)

		// The SDK: the same span through the API.
		c := &collector{}
		tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(c),
			sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", "meshd"))),
			sdktrace.WithIDGenerator(fixedIDs{0xbb}))
		parent := trace.ContextWithRemoteSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
			TraceID: trace.TraceID{15: 0xaa}, SpanID: trace.SpanID{7: 0xcc}, TraceFlags: trace.FlagsSampled, Remote: true}))
		_, s := tp.Tracer(scope).Start(parent, "get", trace.WithSpanKind(kind), trace.WithTimestamp(start), trace.WithAttributes(attrs...))
		s.AddEvent("retry", trace.WithTimestamp(events[0].Time), trace.WithAttributes(events[0].Attrs...))
		if code != "" {
			Error(s, code, msg)
		}
		s.End(trace.WithTimestamp(start.Add(3 * time.Millisecond)))
		official, err := json.Marshal(zipkin.SpanModels(c.spans))
		if err != nil {
			t.Fatal(err)
		}
		w, g := decodeModels(t, EncodingJSON, official), decodeModels(t, enc, ours)
		if len(g) != 1 || !reflect.DeepEqual(w, g) {
			t.Fatalf("code %q:\nofficial %s\nours     %s", code, official, ours)
		}
	}
}

// fixedIDs gives the SDK the span id a test wants.
type fixedIDs struct{ span byte }

func (f fixedIDs) NewIDs(context.Context) (trace.TraceID, trace.SpanID) {
	return trace.TraceID{15: 1}, trace.SpanID{7: f.span}
}
func (f fixedIDs) NewSpanID(context.Context, trace.TraceID) trace.SpanID {
	return trace.SpanID{7: f.span}
}
