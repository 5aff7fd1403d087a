package tracing

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// queue holds ended spans, already written as JSON, until the exporter
// sends them: adding never blocks; when the queue is full the span is
// dropped and counted.
//
// A span is written when it ends, on the goroutine that ends it, while its
// fields are still in cache (Emit writes a Record the same way). The queue is one buffer of spans, each after a
// comma, appended to under a mutex; the exporter is woken once per full
// batch (or by its ticker) and swaps the buffer for an empty one.
type queue struct {
	exp  *zipkinExporter
	size int

	n   atomic.Int64 // spans in pending
	mu  sync.Mutex
	pen []byte // pending: ",{span},{span}..."

	wake     chan struct{}
	flush    chan chan struct{}
	stop     chan struct{}
	done     chan struct{}
	once     sync.Once
	dropped  atomic.Int64
	exported atomic.Int64
}

const (
	batchSize     = 512
	batchInterval = time.Second
)

// scratch holds a span's JSON between writing it and queueing it.
var scratch = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

func newQueue(exp *zipkinExporter, size int) *queue {
	q := &queue{
		exp:   exp,
		size:  size,
		wake:  make(chan struct{}, 1),
		flush: make(chan chan struct{}),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	go q.run()
	return q
}

// add queues an ended span's JSON, or drops it when the queue is full.
func (q *queue) add(s *span) {
	if q.n.Load() >= int64(q.size) {
		q.dropped.Add(1)
		return
	}
	bp := scratch.Get().(*[]byte)
	b := appendSpan(append((*bp)[:0], ','), s)
	q.push(b)
	*bp = b
	scratch.Put(bp)
}

// push queues one span's JSON (after its comma), waking the exporter when a
// batch is full.
func (q *queue) push(b []byte) {
	q.mu.Lock()
	q.pen = append(q.pen, b...)
	n := q.n.Add(1)
	q.mu.Unlock()
	if n == batchSize {
		select {
		case q.wake <- struct{}{}:
		default:
		}
	}
}

// take swaps the pending spans for spare (emptied): it returns them as a
// JSON array, and how many there are.
func (q *queue) take(spare []byte) ([]byte, int) {
	q.mu.Lock()
	got := q.pen
	q.pen = spare[:0]
	n := q.n.Swap(0)
	q.mu.Unlock()
	if len(got) == 0 {
		return got, 0
	}
	got[0] = '[' // the first span's comma
	return append(got, ']'), int(n)
}

func (q *queue) run() {
	defer close(q.done)
	tick := time.NewTicker(batchInterval)
	defer tick.Stop()
	var spare []byte
	send := func() {
		batch, n := q.take(spare)
		if n > 0 {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if q.exp.export(ctx, batch) == nil {
				q.exported.Add(int64(n))
			} else {
				q.dropped.Add(int64(n))
			}
			cancel()
		}
		spare = batch[:0]
	}
	for {
		select {
		case <-q.wake:
			send()
		case <-tick.C:
			send()
		case ack := <-q.flush:
			send()
			close(ack)
		case <-q.stop:
			send()
			return
		}
	}
}

func (q *queue) flushNow(ctx context.Context) error {
	ack := make(chan struct{})
	select {
	case q.flush <- ack:
	case <-q.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-ack:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (q *queue) shutdown(ctx context.Context) error {
	q.once.Do(func() { close(q.stop) })
	select {
	case <-q.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}
