// Package conn is one persistent TChannel v2 connection: the init handshake,
// message ids, any number of concurrent calls in both directions with answers
// out of order, fragmented messages (buffered or streamed), TTLs, cancel,
// ping, graceful shutdown, and fatal protocol errors; and a Pool of
// connections by peer address.
//
// It moves frames and enforces the wire's rules; it makes no routing,
// retry or discovery decision. The SDK (client/) and meshd both build on it;
// meshd's relay sees the frames of the calls it forwards through the
// Relayer hook.
//
// The files follow a connection's life: options.go, handshake.go,
// readloop.go (one goroutine per connection decodes frames and hands each to
// its call, or to the Relayer), outbound.go and inbound.go (calls sent and
// served), writer.go. Writes are batched: a goroutine making or answering a
// call writes the pending batch to the socket itself when no write is under
// way, and the read loop, which must never block on its peer, leaves its
// frames (relayed frames, ping answers) to a write loop. Handlers run on
// their own goroutines.
package conn
