// Package zipkintest is a Zipkin v2 endpoint for tests: it keeps the spans
// posted to it, decoded, so a test can check a trace's shape without a real
// backend (the integration tests use a real Jaeger).
package zipkintest
