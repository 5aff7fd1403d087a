// Package figures keeps the golden figures of the calls a meshd counted
// (internal/golden) over time, in bounded memory: every Step it reads the
// counters and keeps what changed, per service for the last hour and per
// edge (caller → service → method) for the last five minutes. A Window is
// the raw counts of a span (calls, answered, latency buckets), which add up
// across meshds, so a meshd can show the whole mesh by summing the windows
// the others send; Figures turns one into calls per second, success rate
// and latency percentiles.
package figures
