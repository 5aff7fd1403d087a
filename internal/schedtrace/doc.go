// Package schedtrace reads a Go runtime trace (runtime/trace, or a
// process's /debug/pprof/trace) and tells where its goroutines waited: how
// often they were woken, by what they had waited on, how long each then
// stayed runnable before it ran, and how often and how long the
// processors sat idle. It is how the hop benchmarks see the hand-offs and
// wake-ups a relayed call costs, which a CPU profile does not show.
package schedtrace
