package outbox

import (
	"errors"
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
	raw := w.rawConn()
	if raw == nil {
		w.wakeLoop()
		return
	}
	w.flushWith(raw)
}

// rawConn is the socket under nc, if it is one that can be written without
// waiting; nil if not. Looked up once.
func (w *Writer) rawConn() syscall.RawConn {
	if !w.rawKnown {
		w.rawKnown = true
		w.raw = rawOf(w.nc)
	}
	return w.raw
}

// rawOf is x's RawConn if x is a TCP or Unix socket, which outbox reads
// and writes without waiting; nil if not.
func rawOf(x any) syscall.RawConn {
	switch c := x.(type) {
	case *socket:
		return c.raw
	case *net.TCPConn:
		raw, _ := c.SyscallConn()
		return raw
	case *net.UnixConn:
		raw, _ := c.SyscallConn()
		return raw
	}
	return nil
}

// rawWrite is one write that never waits: its buffer, what went, why it
// stopped, and the function RawConn.Write calls, made once per Writer (a
// closure per write cost an allocation). Used only by the flusher.
type rawWrite struct {
	b   []byte
	n   int
	err error
	fn  func(fd uintptr) bool
}

func (r *rawWrite) write(fd uintptr) bool {
	for r.n < len(r.b) {
		m, err := sysWrite(fd, r.b[r.n:])
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return true
		case err != nil:
			r.err = err
			return true
		}
		r.n += m
	}
	return true // done, or full: never wait for the poller
}

// tryWrite writes what the socket takes now; a full socket is n < len(b)
// with no error.
func (w *Writer) tryWrite(raw syscall.RawConn, b []byte) (n int, err error) {
	r := &w.rw
	if r.fn == nil {
		r.fn = r.write
	}
	r.b, r.n, r.err = b, 0, nil
	cerr := raw.Write(r.fn)
	n, err = r.n, r.err
	r.b = nil
	if err == nil && cerr != nil {
		err = cerr
	}
	if errors.Is(err, syscall.EAGAIN) {
		err = nil
	}
	return n, err
}

func (w *Writer) wakeLoop() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}
