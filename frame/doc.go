// Package frame is mesh's TChannel v2 codec: the 16-byte frame header, every
// message type, transport headers, the tracing field, checksums and the
// fragmentation of a call's three args across frames.
//
// It is pure: bytes in, values out. It knows io.Reader and nothing about
// sockets, routing or discovery, so it can be fuzzed and benchmarked alone.
//
// Decoded values alias the buffer they were decoded from. A Frame returned by
// Reader.ReadFrame, and anything decoded from its payload, is valid only until
// the next call to ReadFrame; copy what must live longer.
//
// Where it sits: the connection layer (internal/conn) reads and writes frames
// with this package; meshd's relay (internal/relay) reads call headers in
// place and rewrites ids, ttls and tracing fields with rewrite.go. Error is
// the wire error every layer returns.
package frame
