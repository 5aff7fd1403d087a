package conn

import (
	"net"
	"sync"
	"time"
)

// writer batches frames from many goroutines into few system calls: callers
// append whole frames to a pending buffer under a short lock, and one loop
// swaps that buffer out and writes it while the next batch fills. A caller
// blocks only while the pending buffer is over its limit, which is how a slow
// peer pushes back on a sender.
type writer struct {
	nc      net.Conn
	timeout time.Duration
	limit   int

	mu      sync.Mutex
	drained sync.Cond // the loop took the pending buffer, or the writer failed
	pending []byte
	err     error
	wake    chan struct{}
	quit    chan struct{}
	done    chan struct{}
}

func newWriter(nc net.Conn, limit int, timeout time.Duration) *writer {
	w := &writer{
		nc:      nc,
		timeout: timeout,
		limit:   limit,
		pending: make([]byte, 0, 64<<10),
		wake:    make(chan struct{}, 1),
		quit:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	w.drained.L = &w.mu
	return w
}

// write queues one or more whole frames. It copies f before returning.
func (w *writer) write(f []byte) error {
	w.mu.Lock()
	for w.err == nil && len(w.pending) > w.limit {
		w.drained.Wait()
	}
	if w.err != nil {
		err := w.err
		w.mu.Unlock()
		return err
	}
	first := len(w.pending) == 0
	w.pending = append(w.pending, f...)
	w.mu.Unlock()
	if first {
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
	return nil
}

// loop writes batches until stop is called (nil) or a write fails (the
// error). done is closed before it returns, so the caller may then stop.
func (w *writer) loop() error {
	defer close(w.done)
	spare := make([]byte, 0, 64<<10)
	for {
		select {
		case <-w.wake:
		case <-w.quit:
			w.flush(spare) // what was queued before stop still goes out
			return nil
		}
		var err error
		if spare, err = w.flush(spare); err != nil {
			return err
		}
	}
}

func (w *writer) flush(spare []byte) ([]byte, error) {
	w.mu.Lock()
	batch := w.pending
	w.pending = spare[:0]
	w.drained.Broadcast()
	w.mu.Unlock()
	if len(batch) == 0 {
		return batch, nil
	}
	if w.timeout > 0 {
		w.nc.SetWriteDeadline(time.Now().Add(w.timeout))
	}
	if _, err := w.nc.Write(batch); err != nil {
		w.fail(err)
		return batch, err
	}
	if cap(batch) > 4*w.limit { // don't keep a buffer a burst blew up
		batch = make([]byte, 0, 64<<10)
	}
	return batch, nil
}

// fail makes every current and later write return err.
func (w *writer) fail(err error) {
	w.mu.Lock()
	if w.err == nil {
		w.err = err
	}
	w.drained.Broadcast()
	w.mu.Unlock()
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
