package backoff

import (
	"math/rand/v2"
	"time"
)

// Backoff is the wait between tries. Its zero value is unusable: set Min
// and Max (Min <= Max). It is not safe for concurrent use; each loop holds
// its own.
type Backoff struct {
	Min, Max time.Duration
	next     time.Duration
}

// Next returns the wait before the next try and doubles the one after, up
// to Max.
func (b *Backoff) Next() time.Duration {
	d := max(b.next, b.Min)
	b.next = min(2*d, b.Max)
	return Jitter(d)
}

// Reset starts the waits from Min again, after a success.
func (b *Backoff) Reset() { b.next = 0 }

// Wait sleeps for Next, or until stop is closed (pass ctx.Done()); it
// reports whether the whole wait passed.
func (b *Backoff) Wait(stop <-chan struct{}) bool {
	t := time.NewTimer(b.Next())
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-stop:
		return false
	}
}

// Jitter spreads d by ±20%, so that many processes acting on the same
// schedule do not act at the same moment.
func Jitter(d time.Duration) time.Duration {
	return d*8/10 + time.Duration(rand.Int64N(int64(d)*4/10+1))
}
