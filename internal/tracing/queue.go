package tracing

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// queue holds ended spans, already written in the exporter's encoding,
// until the exporter sends them: adding never blocks; when the queue is full
// the span is dropped and counted.
//
// A span is written when it ends, on the goroutine that ends it, while its
// fields are still in cache (Emit writes a Record the same way). Written
// spans are appended to one of a few buffers (by span id, so concurrent
// calls rarely wait for each other); the exporter is woken once per full
// batch (or by its ticker) and gathers them.
type queue struct {
	exp  *zipkinExporter
	enc  encoder
	size int

	n      atomic.Int64 // spans pending, for the bound and the wakeup
	shards [4]shard

	wake     chan struct{}
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

// scratch holds a span's bytes between writing it and queueing it.
var scratch = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

func newQueue(exp *zipkinExporter, enc encoder, size int) *queue {
	q := &queue{
		exp:  exp,
		enc:  enc,
		size: size,
		wake: make(chan struct{}, 1),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	go q.run()
	return q
}

// shard is one of the queue's buffers: written spans, each as an element
// of a list (encoder.entry).
type shard struct {
	mu  sync.Mutex
	pen []byte
	n   int
	_   [64]byte // its own cache line
}

// add queues an ended span.
func (q *queue) add(s *span) {
	var tags [8]Tag
	z := s.zipkin(tags[:0])
	q.put(spanID64(s.sc.SpanID()), &z)
}

// put writes span z (whose id is id) and queues it, or drops it when the
// queue is full.
func (q *queue) put(id uint64, z *zspan) {
	if q.n.Load() >= int64(q.size) {
		q.dropped.Add(1)
		return
	}
	bp := scratch.Get().(*[]byte)
	b := q.enc.span((*bp)[:0], z)
	q.push(b, id)
	*bp = b
	scratch.Put(bp)
}

// push queues one written span in the shard of its span id, waking the
// exporter when a batch is full.
func (q *queue) push(span []byte, id uint64) {
	sh := &q.shards[id%uint64(len(q.shards))]
	sh.mu.Lock()
	sh.pen = q.enc.entry(sh.pen, span)
	sh.n++
	sh.mu.Unlock()
	if q.n.Add(1) == batchSize {
		select {
		case q.wake <- struct{}{}:
		default:
		}
	}
}

// take gathers the pending spans into batch (emptied first): it returns
// them as the list the endpoint takes, and how many there are.
func (q *queue) take(batch []byte) ([]byte, int) {
	batch = batch[:0]
	n := 0
	for i := range q.shards {
		sh := &q.shards[i]
		sh.mu.Lock()
		batch = append(batch, sh.pen...)
		n += sh.n
		sh.pen, sh.n = sh.pen[:0], 0
		sh.mu.Unlock()
	}
	q.n.Add(-int64(n))
	if n == 0 {
		return batch, 0
	}
	return q.enc.list(batch), n
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
		case <-q.stop:
			send()
			return
		}
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
