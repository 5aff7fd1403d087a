package client

import (
	"math/rand/v2"

	"github.com/meshrpc/mesh/frame"
)

// newTracing starts a sampled trace for a call forced to be traced by a
// process that does not trace itself, so the hops that do record it. Calls
// not forced go without a tracing field, and the first meshd decides.
func newTracing() frame.Tracing {
	id := rand.Uint64() | 1
	return frame.Tracing{SpanID: id, TraceID: id, Flags: frame.TracingSampled}
}
