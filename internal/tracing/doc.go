// Package tracing gives mesh's processes (the SDK's clients and servers,
// and meshd's relay) Zipkin-compatible traces: spans are posted to a Zipkin
// v2 endpoint as proto3 (zipkin.proto, the default) or JSON, so Zipkin,
// Jaeger or an OpenTelemetry Collector show them.
//
// The trace context travels in the TChannel frame's 25-byte tracing field,
// as every TChannel peer expects: 64-bit trace and span ids and the sampled
// flag. FromFrame turns that field into an OpenTelemetry span context (the
// 64-bit trace id is the low half of OpenTelemetry's 128). The high half of
// a 128-bit trace id (W3C's, OpenTelemetry's) travels beside it in a
// transport header, HeaderTraceHigh, so such a trace stays one trace.
//
// Two ways to record a span. Start gives a span behind OpenTelemetry's
// trace.Span interface, carried in a context (the SDK server's: handlers tag
// it and start children through OpenTelemetry's API). Decide and Emit are
// for code that already keeps what the span will say with the call (meshd's
// relay, the SDK client): Decide makes the sampling decision and the ids, and
// Emit writes the finished span in one go, with no span object in between.
// Both become the Zipkin span OpenTelemetry's Zipkin exporter would send
// (tests hold them to it, in both encodings), without its cost.
//
// Exporting never slows calls down: a span is written and queued when it ends, and
// a background goroutine posts batches; when the queue is full (the backend is
// down or slow) spans are dropped and counted.
package tracing
