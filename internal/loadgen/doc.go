// Package loadgen drives load for meshctl bench: calls in a closed loop (each
// of C callers calls again as soon as it is answered) or an open loop (calls
// start on a fixed schedule, R per second, whatever the answers do), for N
// calls or a duration, after a warm-up; and the result: throughput, latency
// quantiles and a histogram, errors by code.
//
// In an open loop a call's latency is counted from when it was due, not from
// when a caller got to it, so a stall shows in the quantiles as every call
// it delayed (no coordinated omission). It knows nothing of TChannel: a
// Call is a function.
package loadgen
