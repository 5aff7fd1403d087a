package tracing

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// queue holds ended spans until the exporter sends them: adding never
// blocks; when the queue is full the span is dropped and counted.
//
// Spans go into a slice under a mutex, and the exporting goroutine is woken
// once per full batch (or by its ticker), not once per span: at full
// sampling a meshd ends a span per call.
type queue struct {
	exp  *zipkinExporter
	size int

	mu      sync.Mutex
	pending []*span

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

func newQueue(exp *zipkinExporter, size int) *queue {
	q := &queue{
		exp:     exp,
		size:    size,
		pending: make([]*span, 0, min(size, batchSize)),
		wake:    make(chan struct{}, 1),
		flush:   make(chan chan struct{}),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	go q.run()
	return q
}

func (q *queue) add(s *span) {
	q.mu.Lock()
	if len(q.pending) >= q.size {
		q.mu.Unlock()
		q.dropped.Add(1)
		s.release()
		return
	}
	q.pending = append(q.pending, s)
	full := len(q.pending) == batchSize
	q.mu.Unlock()
	if full {
		select {
		case q.wake <- struct{}{}:
		default:
		}
	}
}

// take swaps the pending spans for spare (emptied), returning them.
func (q *queue) take(spare []*span) []*span {
	q.mu.Lock()
	got := q.pending
	q.pending = spare[:0]
	q.mu.Unlock()
	return got
}

func (q *queue) run() {
	defer close(q.done)
	tick := time.NewTicker(batchInterval)
	defer tick.Stop()
	var spare []*span
	// send exports everything pending, in batches, and recycles the spans.
	send := func() {
		got := q.take(spare)
		spans := got
		for len(spans) > 0 {
			n := min(len(spans), batchSize)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if q.exp.export(ctx, spans[:n]) == nil {
				q.exported.Add(int64(n))
			} else {
				q.dropped.Add(int64(n))
			}
			cancel()
			for _, s := range spans[:n] {
				s.release()
			}
			clear(spans[:n])
			spans = spans[n:]
		}
		spare = got[:0]
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
