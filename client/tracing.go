package client

import (
	"math/rand/v2"

	"github.com/meshrpc/mesh/frame"
)

// newTracing starts a new trace for a call that carries none: TChannel peers
// expect a span id in every call.
func newTracing() frame.Tracing {
	id := rand.Uint64() | 1
	return frame.Tracing{SpanID: id, TraceID: id}
}
