package outbox

import (
	"errors"
	"math"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// Writer batches frames from many goroutines into few system calls. Callers
// append whole frames to a pending buffer under a short lock. If nobody is
// writing to the socket, a caller that may block (WriteInline: a goroutine making a call
// or answering one) writes the batch itself, and keeps going while others
// append meanwhile: no hand-off to another goroutine on the common path.
// Callers that must not block on the socket (Write: a read loop, which relays
// frames and answers pings) leave the batch to Loop instead, so two
// peers whose read loops both write can never wait on each other. A caller
// blocks only while the pending buffer is over its limit, which is how a slow
// peer pushes back on a sender.
type Writer struct {
	nc      net.Conn
	timeout time.Duration
	limit   int
	onFail  func(error) // runs once, on its own goroutine, when a write fails
	budget  *Budget     // nil: not shared
	direct  bool        // every write flushes on its own goroutine (Inline)

	mu       sync.Mutex
	drained  sync.Cond // pending was taken for writing, or the writer failed
	pending  []byte
	spare    []byte
	flushing bool      // a goroutine is writing to the socket
	writing  int       // bytes of the batch being written
	aborted  bool      // the deadline is short and stays so
	counted  int       // bytes counted in budget
	deadline time.Time // the socket's write deadline, set by the flusher
	err      error
	rw       sysCall // Kick's writes, which never wait; rw.raw nil: nc is no socket
	held     bool    // in a Batch's list to send; guarded by its mu
	wake     chan struct{}
	quit     chan struct{}
	done     chan struct{}
}

// New returns a Writer to nc that makes callers wait past limit pending
// bytes, gives a write timeout to finish, and calls onFail once if one fails;
// run Loop on a goroutine of its own.
func New(nc net.Conn, limit int, timeout time.Duration, budget *Budget, onFail func(error)) *Writer {
	w := &Writer{
		nc:      nc,
		timeout: timeout,
		limit:   limit,
		onFail:  onFail,
		budget:  budget,
		// The batches grow with use: an idle connection holds no buffer.
		wake: make(chan struct{}, 1),
		quit: make(chan struct{}),
		done: make(chan struct{}),
	}
	w.rw.raw = rawOf(nc)
	w.drained.L = &w.mu
	return w
}

// Write queues whole frames, copying them, and returns without touching the
// socket (the write loop sends them).
func (w *Writer) Write(f []byte) error { return w.enqueue(f, byLoop, 0) }

// WriteInline queues whole frames and, if no one is writing to the socket,
// writes them on the caller's goroutine.
func (w *Writer) WriteInline(f []byte) error { return w.enqueue(f, byCaller, 0) }

// ErrFull is TryWrite's answer when the peer is not keeping up.
var ErrFull = errors.New("the peer is not reading: its write buffer is full")

// Backlogged reports whether more than the limit waits to be written: the
// peer is not keeping up with what is sent to it.
func (w *Writer) Backlogged() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.pending) > w.limit
}

// TryWrite queues whole frames like Write, unless they would take the
// pending buffer past max bytes (frames larger than max go when nothing
// waits): then it returns ErrFull at once instead of waiting,
// so a read loop that relays to many peers never waits on one that stopped
// reading. max is above limit: a burst (a large answer) may queue past what
// makes writers wait, a peer that does not read at all may not. Large
// frames never take the last room: small ones (another caller's) still fit.
func (w *Writer) TryWrite(f []byte, max int) error { return w.enqueue(f, byLoop, max) }

// Inline makes every write flush on the writing goroutine when no one is
// flushing, and no write wait for room: for an nc that hands the bytes on
// in memory and never blocks (conn.Join), where waking Loop would be the
// only cost of the write. A write made while its goroutine flushes (the
// in-memory peer answering at once) is queued and goes out in the same
// flush. Call it before the first write.
func (w *Writer) Inline() {
	w.direct = true
	w.limit = math.MaxInt
}

// Add queues whole frames like TryWrite, but wakes no one: the caller
// writes them with Flush once it let go of whatever lock kept frames it
// queues from several goroutines in order.
func (w *Writer) Add(f []byte, max int) error { return w.enqueue(f, byFlush, max) }

// Flush writes what is queued on the caller's goroutine, unless someone
// is writing already (they take it).
func (w *Writer) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.flushing || w.err != nil {
		return w.err
	}
	return w.flushLocked()
}

// Who writes what a write queued, when no one is writing already.
type sender int

const (
	byLoop   sender = iota // Loop (woken), unless Inline
	byCaller               // the caller, at once
	byFlush                // the caller's Flush, later
)

// enqueue appends f to the pending batch; with max 0 it waits while the
// batch is over the limit, else it fails past max.
func (w *Writer) enqueue(f []byte, by sender, max int) error {
	w.mu.Lock()
	if max > 0 && w.err == nil {
		if n := len(w.pending); n > 0 && n+len(f) > max {
			w.mu.Unlock()
			return ErrFull
		}
		if w.budget != nil && w.budget.refuses(w.counted) {
			w.mu.Unlock()
			return ErrQueuesFull
		}
	}
	for max == 0 && w.err == nil && len(w.pending) > w.limit {
		w.drained.Wait()
	}
	if w.err != nil {
		err := w.err
		w.mu.Unlock()
		return err
	}
	w.pending = append(w.pending, f...)
	w.count()
	if w.flushing || by == byFlush {
		w.mu.Unlock() // the goroutine writing takes these bytes too, or Flush will
		return nil
	}
	if by == byLoop && !w.direct {
		w.mu.Unlock()
		w.wakeLoop()
		return nil
	}
	err := w.flushLocked()
	w.mu.Unlock()
	return err
}

// flushLocked writes until nothing is pending. It holds mu except during
// the system call.
func (w *Writer) flushLocked() error { return w.flushWith(nil) }

// flushWith is flushLocked, and with raw (the socket's) Kick's: each write
// takes what the socket takes now, and what it does not take stays first
// in pending, for Loop.
func (w *Writer) flushWith(raw syscall.RawConn) error {
	w.flushing = true
	for len(w.pending) > 0 && w.err == nil {
		batch := w.pending
		w.pending = w.spare[:0]
		w.writing = len(batch)
		w.drained.Broadcast()
		if raw == nil && w.timeout > 0 && !w.aborted {
			// Moving the deadline costs a timer update, so it moves only once
			// half of it is used: every write gets between half and all of
			// the timeout to finish. (Under mu, so abort's stays.)
			if now := time.Now(); now.After(w.deadline.Add(-w.timeout / 2)) {
				w.deadline = now.Add(w.timeout)
				w.nc.SetWriteDeadline(w.deadline)
			}
		}
		w.mu.Unlock()
		var n int
		var err error
		if raw == nil {
			n, err = w.nc.Write(batch)
		} else {
			n, err = w.rw.write(batch) // what the socket takes now
		}
		w.mu.Lock()
		w.writing = 0
		if raw != nil && n == 0 && !w.aborted && errors.Is(err, os.ErrDeadlineExceeded) {
			// Kick's writes never wait, so no deadline is theirs: this one
			// was set by a flush of Loop's long ago and has passed since
			// (the socket refuses every write then, before trying). It goes;
			// the next flush of Loop's sets one again.
			w.putBack(batch)
			w.deadline = time.Time{}
			w.nc.SetWriteDeadline(w.deadline)
			continue
		}
		if raw != nil && err == nil && n < len(batch) { // the socket is full: the rest first, by Loop
			w.putBack(append(batch[:0], batch[n:]...))
			w.wakeLoop()
			break
		}
		w.count()
		if cap(batch)/4 > w.limit { // don't keep a buffer a burst blew up (limit may be MaxInt: Inline)
			batch = nil
		}
		w.spare = batch[:0]
		if err != nil {
			w.fail(err)
		}
	}
	w.flushing = false
	return w.err
}

// putBack puts rest, a batch's unwritten end, first in pending, before
// what was queued meanwhile. Called with mu held.
func (w *Writer) putBack(rest []byte) {
	later := w.pending
	w.pending = append(rest, later...)
	w.spare = later[:0]
	w.count()
}

// fail ends the writer with err, the first time. Called with mu held.
func (w *Writer) fail(err error) {
	if w.err != nil {
		return
	}
	w.err = err
	w.pending = w.pending[:0] // never to be sent
	w.count()
	w.drained.Broadcast()
	go w.onFail(err)
}

// count keeps the budget's share of this connection current: the bytes
// pending and being written, past the free share. Called with mu held.
func (w *Writer) count() {
	if w.budget == nil {
		return
	}
	now := max(len(w.pending)+w.writing-budgetFree, 0)
	w.budget.update(w.counted, now)
	w.counted = now
}

// Loop sends what non-inline callers queued, until stop.
func (w *Writer) Loop() {
	defer close(w.done)
	for {
		select {
		case <-w.wake:
		case <-w.quit:
			w.mu.Lock()
			if !w.flushing {
				w.flushLocked() // what was queued before stop still goes out
			}
			w.mu.Unlock()
			return
		}
		w.mu.Lock()
		if !w.flushing {
			w.flushLocked()
		}
		w.mu.Unlock()
	}
}

// abortGrace is how long a failed connection's last frames (the error that
// says why) have to go out.
const abortGrace = 100 * time.Millisecond

// Abort cuts the socket's write deadline to abortGrace: what is queued
// still goes out to a peer that reads, and a write stuck on one that does
// not ends, instead of holding the connection's close for the whole
// timeout.
func (w *Writer) Abort() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.aborted = true
	w.nc.SetWriteDeadline(time.Now().Add(abortGrace))
}

// Stop ends the loop after it wrote what is queued, and waits for it.
func (w *Writer) Stop() {
	select {
	case <-w.quit:
	default:
		close(w.quit)
	}
	<-w.done
}
