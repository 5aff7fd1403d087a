package grpcgate

import (
	"math/bits"
	"sync"
)

// buffers recycles the byte slices of what is copied on at once: an
// answer's frames (into the outbox), a request's message (into the relay).
// At 32 callers they were a third of meshd's allocated bytes per call.
// The pool holds *[]byte, so putting one back allocates nothing.
var buffers sync.Pool

// maxPooled is the largest buffer kept: a rare large message's buffer is
// left to the collector.
const maxPooled = 64 << 10

// getBuffer is an empty buffer with room for n bytes; put it back with
// putBuffer once no one holds what was written into it. Buffers are made
// in powers of two from 4 KiB, so those of a request and of an answer
// (its message, headers and trailers) of one size fit either.
func getBuffer(n int) *[]byte {
	p, ok := buffers.Get().(*[]byte)
	if !ok {
		p = new([]byte)
	}
	if cap(*p) < n {
		*p = make([]byte, 0, max(4096, 1<<bits.Len(uint(n-1))))
	}
	*p = (*p)[:0]
	return p
}

// putBuffer keeps p for reuse, holding b, the buffer as last grown (nil p:
// nothing to keep).
func putBuffer(p *[]byte, b []byte) {
	if p == nil || cap(b) > maxPooled {
		return
	}
	*p = b
	buffers.Put(p)
}
