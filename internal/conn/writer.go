package conn

import (
	"errors"
	"net"
	"sync"
	"time"
)

// writer batches frames from many goroutines into few system calls. Callers
// append whole frames to a pending buffer under a short lock. If nobody is
// writing to the socket, a caller that may block (a goroutine making a call
// or answering one) writes the batch itself, and keeps going while others
// append meanwhile: no hand-off to another goroutine on the common path.
// Callers that must not block on the socket (the read loop, which relays
// frames and answers pings) leave the batch to the write loop instead, so two
// peers whose read loops both write can never wait on each other. A caller
// blocks only while the pending buffer is over its limit, which is how a slow
// peer pushes back on a sender.
type writer struct {
	nc      net.Conn
	timeout time.Duration
	limit   int
	onFail  func(error) // runs once, on its own goroutine, when a write fails

	mu       sync.Mutex
	drained  sync.Cond // pending was taken for writing, or the writer failed
	pending  []byte
	spare    []byte
	flushing bool      // a goroutine is writing to the socket
	deadline time.Time // the socket's write deadline, set by the flusher
	err      error
	wake     chan struct{}
	quit     chan struct{}
	done     chan struct{}
}

func newWriter(nc net.Conn, limit int, timeout time.Duration, onFail func(error)) *writer {
	w := &writer{
		nc:      nc,
		timeout: timeout,
		limit:   limit,
		onFail:  onFail,
		// The batches grow with use: an idle connection holds no buffer.
		wake: make(chan struct{}, 1),
		quit: make(chan struct{}),
		done: make(chan struct{}),
	}
	w.drained.L = &w.mu
	return w
}

// write queues whole frames, copying them, and returns without touching the
// socket (the write loop sends them).
func (w *writer) write(f []byte) error { return w.queue(f, false) }

// writeInline queues whole frames and, if no one is writing to the socket,
// writes them on the caller's goroutine.
func (w *writer) writeInline(f []byte) error { return w.queue(f, true) }

// errFull is tryWrite's answer when the peer is not keeping up.
var errFull = errors.New("the peer is not reading: its write buffer is full")

// backlogged reports whether more than the limit waits to be written: the
// peer is not keeping up with what is sent to it.
func (w *writer) backlogged() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.pending) > w.limit
}

// tryWrite queues whole frames like write, unless the pending buffer holds
// more than max bytes: then it returns errFull at once instead of waiting,
// so a read loop that relays to many peers never waits on one that stopped
// reading. max is above limit: a burst (a large answer) may queue past what
// makes writers wait, a peer that does not read at all may not.
func (w *writer) tryWrite(f []byte, max int) error { return w.enqueue(f, false, max) }

func (w *writer) queue(f []byte, inline bool) error { return w.enqueue(f, inline, 0) }

// enqueue appends f to the pending batch; with max 0 it waits while the
// batch is over the limit, else it fails past max.
func (w *writer) enqueue(f []byte, inline bool, max int) error {
	w.mu.Lock()
	if max > 0 && w.err == nil && len(w.pending) > max {
		w.mu.Unlock()
		return errFull
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
	if w.flushing {
		w.mu.Unlock() // the goroutine writing takes these bytes too
		return nil
	}
	if !inline {
		w.mu.Unlock()
		select {
		case w.wake <- struct{}{}:
		default:
		}
		return nil
	}
	err := w.flushLocked()
	w.mu.Unlock()
	return err
}

// flushLocked writes until nothing is pending. It holds mu except during
// the system call.
func (w *writer) flushLocked() error {
	w.flushing = true
	for len(w.pending) > 0 && w.err == nil {
		batch := w.pending
		w.pending = w.spare[:0]
		w.drained.Broadcast()
		w.mu.Unlock()
		if w.timeout > 0 {
			// Moving the deadline costs a timer update, so it moves only once
			// half of it is used: every write gets between half and all of
			// the timeout to finish.
			if now := time.Now(); now.After(w.deadline.Add(-w.timeout / 2)) {
				w.deadline = now.Add(w.timeout)
				w.nc.SetWriteDeadline(w.deadline)
			}
		}
		_, err := w.nc.Write(batch)
		w.mu.Lock()
		if cap(batch) > 4*w.limit { // don't keep a buffer a burst blew up
			batch = nil
		}
		w.spare = batch[:0]
		if err != nil && w.err == nil {
			w.err = err
			w.drained.Broadcast()
			go w.onFail(err)
		}
	}
	w.flushing = false
	return w.err
}

// loop sends what non-inline callers queued, until stop.
func (w *writer) loop() {
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

// stop ends the loop after it wrote what is queued, and waits for it.
func (w *writer) stop() {
	select {
	case <-w.quit:
	default:
		close(w.quit)
	}
	<-w.done
}
