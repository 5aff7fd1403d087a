package relay

import (
	"sync"
	"time"

	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/conn"
)

// callTimer is one of a call's timers (its TTL, its attempt's timeout),
// reused from call to call: time.AfterFunc would allocate a timer and a
// closure for every relayed call. What the closure held is in its fields,
// set when it is armed.
type callTimer struct {
	t    *time.Timer
	fire func(*callTimer) // what it does at its time
	r    *Relay
	rc   *relayed
	slot **callTimer // the call's field that holds it (rc.timer, rc.tryTimer)
	// What fire needs beyond the call.
	tr      frame.Tracing // expired's: the request's tracing field
	dst     *conn.Conn    // the attempt's connection and id (watchAttempt)
	dstID   uint32
	timeout time.Duration
}

var callTimers = sync.Pool{New: func() any { return new(callTimer) }}

// newTimer puts a timer of rc's that will call fire in *slot, stopping
// the one there; the caller sets the fields fire reads, then starts it.
// Called with rc.mu held.
func (r *Relay) newTimer(rc *relayed, slot **callTimer, fire func(*callTimer)) *callTimer {
	stopTimer(slot)
	ct := callTimers.Get().(*callTimer)
	ct.fire, ct.r, ct.rc, ct.slot = fire, r, rc, slot
	*slot = ct
	return ct
}

// start makes the timer fire after d.
func (ct *callTimer) start(d time.Duration) {
	if ct.t == nil {
		ct.t = time.AfterFunc(d, ct.run)
	} else {
		ct.t.Reset(d)
	}
}

// stopTimer stops the timer in *slot, if any, and empties the slot.
// Called with the call's mu held. A timer that stopped before its time
// goes back to the pool here; one that fired already is returned by its
// own run, which is under way or done with the slot.
func stopTimer(slot **callTimer) {
	ct := *slot
	if ct == nil {
		return
	}
	*slot = nil
	if ct.t.Stop() {
		ct.release()
	}
}

// run is the timer's function. Once it started, a stop finds the timer
// fired and leaves it alone, so run returns it to the pool, after taking
// it out of the call's slot if fire left it there: a later stop must not
// meet it reused by another call.
func (ct *callTimer) run() {
	ct.fire(ct)
	rc := ct.rc
	rc.mu.Lock()
	if *ct.slot == ct {
		*ct.slot = nil
	}
	rc.mu.Unlock()
	ct.release()
}

func (ct *callTimer) release() {
	t := ct.t
	*ct = callTimer{t: t}
	callTimers.Put(ct)
}
