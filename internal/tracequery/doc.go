// Package tracequery reads traces back from a trace backend's query API,
// Jaeger's (/api/traces) or Zipkin's (/api/v2), into one shape: meshctl
// trace draws one, and the dashboard searches for a service's slowest and
// failed ones.
package tracequery
