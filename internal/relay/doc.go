// Package relay is meshd's routing engine: the conn.Relayer of every
// connection a meshd holds. It forwards each call frame by frame, reading
// only the frame header, the service name and the transport headers, and
// rewriting only the message id, the ttl and the tracing field (and, on the
// first hop, adding the chosen instance's id as a routing header, with
// frame's in-place rewrites). arg2 and arg3 are never decoded, so a
// fragmented 100 MiB call costs the relay no more memory than one frame.
//
// Where a call goes is decided by router's stages, run as data: the
// pipelines a call goes through are declared in one place, pipeline.go,
// which a newcomer reads first. What the relay adds is what only a relay
// has: connections to other meshds (peers.go), last-hop delivery to a local
// instance (deliver.go), the calls in flight, kept per connection
// (calls.go), timers for the TTL and each attempt, resending a failed
// attempt's saved frames to another instance (retry.go), a hop span per
// call (spans.go), explanations of recent calls (explain.go) and metrics.
//
// A call on a connection from another meshd (init header mesh_role: meshd)
// is on its last hop: it is delivered to the instance its routing header
// names, or any local instance of the service, and never forwarded again.
package relay
