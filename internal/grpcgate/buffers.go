package grpcgate

import "sync"

// buffers recycles the byte slices of what is copied on at once: an
// answer's frames (into the outbox), a request's message (into the relay).
// At 32 callers they were a third of meshd's allocated bytes per call.
// The pool holds *[]byte, so putting one back allocates nothing.
var buffers sync.Pool

// maxPooled is the largest buffer kept: a rare large message's buffer is
// left to the collector.
const maxPooled = 64 << 10

// getBuffer is an empty buffer with room for n bytes; put it back with
// putBuffer once no one holds what was written into it.
func getBuffer(n int) *[]byte {
	if p, ok := buffers.Get().(*[]byte); ok {
		if cap(*p) >= n {
			*p = (*p)[:0]
			return p
		}
		*p = make([]byte, 0, n)
		return p
	}
	b := make([]byte, 0, max(n, 1024))
	return &b
}

// putBuffer keeps p, whose slice is the buffer as last grown, for reuse.
func putBuffer(p *[]byte) {
	if p == nil || cap(*p) > maxPooled {
		return
	}
	buffers.Put(p)
}
