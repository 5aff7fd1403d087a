// Package relay is meshd's routing engine: the conn.Relayer of every
// connection a meshd holds. It forwards each call frame by frame, reading
// only the frame header, the service name and the transport headers, and
// rewriting only the message id, the ttl and the tracing field (and, on the
// first hop to another host, adding the chosen instance's id and the
// caller's proven identity as routing headers, with frame's in-place
// rewrites). arg2 and arg3 are never decoded, so a fragmented 100 MiB call
// costs the relay no more memory than one frame.
//
// Where a call goes is decided by internal/routing's stages, run as data:
// the prologue and the pipelines a call goes through are declared in one
// place, pipeline.go, which a newcomer reads first. What the relay adds is
// what only a relay has: the prologue's checks of frames from apps
// (edge.go) and of their connections' limits (limits.go), connections to
// other meshds (a conn.Pool), last-hop delivery to a local instance
// (deliver.go, local.go), the calls in flight, kept per connection
// (calls.go), timers for the TTL and each attempt, writes to peers that must
// not wait (send.go), resending a failed attempt's saved frames to another
// instance (retry.go), a hop span per call (spans.go), explanations of
// recent calls (explain.go) and metrics.
//
// A call on a connection that is another meshd's is on its last hop: it is
// delivered to the instance its routing header names, or any local instance
// of the service, and never forwarded again. Which connections are a
// meshd's is what meshd proved and told the relay (Source, in the
// connection's conn.Options.Tag: the host listener after the TLS handshake,
// or a connection meshd dialed), never what a peer says of itself (an init
// header mesh_role: meshd counts for nothing; source.go).
package relay
