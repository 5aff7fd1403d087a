// Package conn is one persistent TChannel v2 connection: the init handshake,
// message ids, any number of concurrent calls in both directions with answers
// out of order, fragmented messages (buffered or streamed), TTLs, cancel,
// ping, graceful shutdown, and fatal protocol errors.
//
// It moves frames and enforces the wire's rules; it makes no routing,
// retry or discovery decision. The SDK (client/) and meshd both build on it.
//
// Inside, each connection runs one read loop, which decodes frames and hands
// them to the call they belong to, and one write loop, which sends whatever
// frames callers queued since its last write in one system call. Handlers run
// on their own goroutines.
package conn
