package outbox

import (
	"net"
	"syscall"
)

// Kick writes what is queued without waiting on the socket: what it takes
// now goes on the caller's goroutine, what it does not take goes to Loop,
// before anything queued later. A read loop may kick: it never blocks on a
// peer that does not read. On a connection that is not a socket (conn.Join's
// pipe) it does what Flush does if Inline, else wakes Loop.
func (w *Writer) Kick() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.flushing || w.err != nil || len(w.pending) == 0 {
		return
	}
	if w.direct {
		w.flushLocked()
		return
	}
	if w.rw.raw == nil {
		w.wakeLoop()
		return
	}
	w.flushWith(w.rw.raw)
}

// rawOf is x's RawConn if x is a TCP or Unix socket, which outbox reads
// and writes without waiting; nil if not.
func rawOf(x any) syscall.RawConn {
	switch c := x.(type) {
	case *socket:
		return c.rd.raw
	case *net.TCPConn:
		raw, _ := c.SyscallConn()
		return raw
	case *net.UnixConn:
		raw, _ := c.SyscallConn()
		return raw
	}
	return nil
}

func (w *Writer) wakeLoop() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}
