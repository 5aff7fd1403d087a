// Package lograte is a slog.Handler that keeps one kind of fault from
// flooding the log: records with the same message pass at a bounded rate,
// and the rest are counted, not written. A hostile peer sending garbage on
// thousands of connections then costs a few lines, and a metric.
package lograte
