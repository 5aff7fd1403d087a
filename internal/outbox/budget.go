package outbox

import (
	"errors"
	"sync/atomic"
)

// A Budget bounds, in all, the bytes that the connections sharing it
// (New) queue for peers that are not keeping up, so that
// many slow peers together cannot make a process hold what each one's
// MaxQueued allows. Each connection's first budgetFree queued bytes are its
// own, uncounted: a peer that keeps up rarely has more waiting, and counting
// them would put a shared counter on every write. Once the counted bytes
// pass Max, TryWrite fails with ErrQueuesFull on every connection holding
// counted bytes, until what they hold is written or they close; connections
// keeping up still write.
type Budget struct {
	// Max is the bytes, past each connection's free share, that may be
	// queued in all.
	Max int64

	bytes atomic.Int64 // counted bytes queued
}

// budgetFree is what a connection queues before its bytes count.
const budgetFree = 64 << 10

// Bytes reports the counted bytes queued now.
func (q *Budget) Bytes() int64 { return q.bytes.Load() }

// ErrQueuesFull is TryWrite's answer while the budget is spent.
var ErrQueuesFull = errors.New("the peer is not keeping up, and slow peers hold all the bytes meshd queues for them")

// refuses reports whether a connection holding counted bytes may queue no
// more: the budget is spent.
func (q *Budget) refuses(counted int) bool { return counted > 0 && q.bytes.Load() > q.Max }

// update moves a connection's counted bytes from was to now.
func (q *Budget) update(was, now int) {
	if was != now {
		q.bytes.Add(int64(now - was))
	}
}
