package tracing

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// queue holds ended spans until the exporter sends them: adding never
// blocks; when the queue is full the span is dropped and counted.
type queue struct {
	exp      *zipkinExporter
	ch       chan *span
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
		exp:   exp,
		ch:    make(chan *span, size),
		flush: make(chan chan struct{}),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	go q.run()
	return q
}

func (q *queue) add(s *span) {
	select {
	case q.ch <- s:
	default:
		q.dropped.Add(1)
	}
}

func (q *queue) run() {
	defer close(q.done)
	batch := make([]*span, 0, batchSize)
	tick := time.NewTicker(batchInterval)
	defer tick.Stop()
	send := func() {
		if len(batch) == 0 {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if q.exp.export(ctx, batch) == nil {
			q.exported.Add(int64(len(batch)))
		} else {
			q.dropped.Add(int64(len(batch)))
		}
		cancel()
		clear(batch)
		batch = batch[:0]
	}
	add := func(s *span) {
		if batch = append(batch, s); len(batch) == batchSize {
			send()
		}
	}
	// drain sends everything queued so far.
	drain := func() {
		for {
			select {
			case s := <-q.ch:
				add(s)
			default:
				send()
				return
			}
		}
	}
	for {
		select {
		case s := <-q.ch:
			add(s)
		case <-tick.C:
			send()
		case ack := <-q.flush:
			drain()
			close(ack)
		case <-q.stop:
			drain()
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
