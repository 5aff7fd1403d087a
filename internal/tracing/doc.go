// Package tracing gives mesh's processes (the SDK's clients and servers,
// and meshd's relay) Zipkin-compatible traces with OpenTelemetry: spans are
// exported as Zipkin v2 JSON, so Zipkin or Jaeger show them.
//
// The trace context travels in the TChannel frame's 25-byte tracing field,
// as every TChannel peer expects: 64-bit trace and span ids and the sampled
// flag. ToFrame and FromFrame translate between that field and OpenTelemetry
// span contexts (the 64-bit trace id is the low half of OpenTelemetry's 128).
//
// Exporting never slows calls down: ended spans go into a bounded queue that
// a background goroutine sends in batches; when the queue is full (the
// backend is down or slow) spans are dropped and counted.
package tracing
