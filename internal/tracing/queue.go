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
// fields are still in cache (Emit writes a Record the same way). Written
// spans, each after a comma, are appended to one of a few buffers (by span
// id, so concurrent calls rarely wait for each other); the exporter is woken
// once per full batch (or by its ticker) and gathers them.
type queue struct {
	exp  *zipkinExporter
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

// scratch holds a span's JSON between writing it and queueing it.
var scratch = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

func newQueue(exp *zipkinExporter, size int) *queue {
	q := &queue{
		exp:  exp,
		size: size,
		wake: make(chan struct{}, 1),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	go q.run()
	return q
}

// shard is one of the queue's buffers: ",{span},{span}...".
type shard struct {
	mu  sync.Mutex
	pen []byte
	n   int
	_   [64]byte // its own cache line
}

// add queues an ended span's JSON.
func (q *queue) add(s *span) {
	q.put(spanID64(s.sc.SpanID()), func(b []byte) []byte { return appendSpan(b, s) })
}

// put queues the JSON of span id that write appends, or drops the span
// when the queue is full.
func (q *queue) put(id uint64, write func(b []byte) []byte) {
	if q.n.Load() >= int64(q.size) {
		q.dropped.Add(1)
		return
	}
	bp := scratch.Get().(*[]byte)
	b := write(append((*bp)[:0], ','))
	q.push(b, id)
	*bp = b
	scratch.Put(bp)
}

// push queues one span's JSON (after its comma) in the shard of its span
// id, waking the exporter when a batch is full.
func (q *queue) push(b []byte, id uint64) {
	sh := &q.shards[id%uint64(len(q.shards))]
	sh.mu.Lock()
	sh.pen = append(sh.pen, b...)
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
// them as a JSON array, and how many there are.
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
	batch[0] = '[' // the first span's comma
	return append(batch, ']'), n
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
