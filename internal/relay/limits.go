package relay

import (
	"cmp"
	"fmt"
	"time"

	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/conn"
)

// Limits bound what one connection, or all of them, can make the relay hold
// or do to others. The zero value of a field is its default.
type Limits struct {
	// CallsPerConn bounds the calls in flight that one caller's connection
	// has through this meshd; past it a new call is answered Busy (the
	// connection stays).
	CallsPerConn int
	// HalfSentPerConn bounds the calls forwarded on one connection whose
	// request has not fully gone out: an instance's connection at the bound
	// takes no new call (the Balancer picks another, or the call is answered
	// Busy), since its peer fails the whole connection past its own bound
	// (1,024 in mesh's SDK).
	HalfSentPerConn int
	// HalfSentPerCaller bounds the calls one app's connection has started
	// and not finished sending; past it its next multi-frame call is
	// answered Busy. It keeps one caller from using up HalfSentPerConn of an
	// instance that others call too.
	HalfSentPerCaller int
	// SavedPerConn and SavedTotal bound the request bytes kept for retries,
	// per caller connection and for the whole meshd; a call past them is
	// forwarded as usual but not retried.
	SavedPerConn, SavedTotal int64
	// MaxTTL caps the ttl a call may ask for: the relay holds a call (and
	// its memory) at most this long.
	MaxTTL time.Duration
}

// The defaults of Limits.
const (
	DefaultCallsPerConn      = 10000
	DefaultHalfSentPerConn   = 512
	DefaultHalfSentPerCaller = 64
	DefaultSavedPerConn      = 16 << 20
	DefaultSavedTotal        = 256 << 20
	DefaultMaxTTL            = 10 * time.Minute
)

func (l Limits) withDefaults() Limits {
	l.CallsPerConn = cmp.Or(l.CallsPerConn, DefaultCallsPerConn)
	l.HalfSentPerConn = cmp.Or(l.HalfSentPerConn, DefaultHalfSentPerConn)
	l.HalfSentPerCaller = cmp.Or(l.HalfSentPerCaller, DefaultHalfSentPerCaller)
	l.SavedPerConn = cmp.Or(l.SavedPerConn, DefaultSavedPerConn)
	l.SavedTotal = cmp.Or(l.SavedTotal, DefaultSavedTotal)
	l.MaxTTL = cmp.Or(l.MaxTTL, DefaultMaxTTL)
	return l
}

// admitCall is the prologue's check of the per-connection limits for a new
// call from an app's connection c: its answers are read, calls in flight,
// and calls half sent when this one will be.
func (r *Relay) admitCall(c *conn.Conn, rc *relayed, req *frame.CallReq, _ *frame.Fragment) error {
	rc.srcT = r.table(c)
	t, multiFrame := rc.srcT, req.Flags&frame.FlagMoreFragments != 0
	if c.Backlogged() { // it does not read its answers: it gets no new call served
		r.stats.limited[limitBacklog].Add(1)
		return frame.Errorf(frame.ErrCodeBusy, "this connection does not read its answers (over 1 MiB wait for it)")
	}
	t.mu.Lock()
	n := len(t.took)
	t.mu.Unlock()
	if n >= r.limits.CallsPerConn {
		r.stats.limited[limitCalls].Add(1)
		return frame.Errorf(frame.ErrCodeBusy, "this connection has %d calls in flight through meshd, the limit", n)
	}
	if h := t.halfFrom.Load(); multiFrame && h >= int64(r.limits.HalfSentPerCaller) {
		r.stats.limited[limitHalfFrom].Add(1)
		return frame.Errorf(frame.ErrCodeBusy, "this connection has %d calls half sent through meshd, the limit", h)
	}
	return nil
}

// halfSentFull reports why the connection c takes no new call, if it has
// as many half-sent calls as it may.
func (r *Relay) halfSentFull(c *conn.Conn) error {
	v, ok := r.tables.Load(c)
	if !ok {
		return nil
	}
	if n := v.(*table).halfSent.Load(); n >= int64(r.limits.HalfSentPerConn) {
		r.stats.limited[limitHalfSent].Add(1)
		return fmt.Errorf("its connection has %d calls half sent, the limit", n)
	}
	return nil
}

// mayKeep reports whether n more request bytes may be kept for a retry of a
// call from t, and if so counts them.
func (r *Relay) mayKeep(t *table, n int) bool {
	if t.saved.Load()+int64(n) > r.limits.SavedPerConn || r.savedTotal.Load()+int64(n) > r.limits.SavedTotal {
		r.stats.limited[limitSaved].Add(1)
		return false
	}
	t.saved.Add(int64(n))
	r.savedTotal.Add(int64(n))
	return true
}

// unkeep gives back what a call kept for retries.
func (r *Relay) unkeep(t *table, n int) {
	t.saved.Add(-int64(n))
	r.savedTotal.Add(-int64(n))
}

// The limits counted in mesh_limit_hits_total.
const (
	limitCalls = iota
	limitHalfSent
	limitHalfFrom
	limitSaved
	limitTTL
	limitSlowPeer
	limitBacklog
	limitQueuesFull
	numLimits
)

var limitNames = [numLimits]string{"calls_per_conn", "half_sent_per_conn", "half_sent_per_caller", "saved_bytes", "max_ttl", "slow_peer", "backlogged_caller", "queued_total"}
