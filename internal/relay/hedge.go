package relay

import (
	"slices"
	"time"

	"go.opentelemetry.io/otel/attribute"

	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/conn"
	"github.com/meshrpc/mesh/internal/routing"
	"github.com/meshrpc/mesh/internal/tracing"
)

// Whether and when a call is hedged is the Balancer's decision
// (HedgeAfter, MayHedge: internal/routing/hedge.go). What is the relay's
// own: the hedge goes out as a retry does, from the request's saved
// frames under a new id, but while the first attempt is still in flight;
// the first answer frame from either decides, the other attempt is
// cancelled on the wire and taken off its connection's table, so its
// answer, if it comes, is dropped as a stray. An attempt that fails while
// the other is in flight is dropped the same way: the other may still
// answer.

// notRecorded is the record index of an attempt past maxRecorded.
const notRecorded = 255

// hedging is a call's hedge: its timer from when the call is sent, then
// the second attempt.
type hedging struct {
	timer    *time.Timer
	dst      *conn.Conn // nil until sent
	dstID    uint32
	checkRes bool // the hedge's answer comes from an app (edge.go)
	rec      uint8
	attempt  routing.Attempt
}

// armHedge starts rc's hedge timer when its service hedges its method.
// Called under rc.mu, after the call is in the tables.
func (r *Relay) armHedge(rc *relayed, delay time.Duration) {
	if rc.done || rc.saved == nil {
		return
	}
	rc.hedge = &hedging{}
	rc.hedged.Store(true)
	rc.hedge.timer = time.AfterFunc(delay, func() { r.sendHedge(rc) })
}

// sendHedge sends rc's hedge, if the call is still unanswered and the
// Balancer allows one. It routes without waiting (a timer's goroutine,
// with rc.mu held: the call's routing state is shared with its first
// attempt's retries): an instance that needs a first lookup or a dial is
// not hedged to.
func (r *Relay) sendHedge(rc *relayed) {
	rc.mu.Lock()
	h := rc.hedge
	c := &rc.call
	if rc.done || rc.between || h == nil || h.dst != nil || !rc.reqDone || rc.tooBig ||
		!r.bal.MayHedge(c, time.Until(rc.deadline)) {
		rc.mu.Unlock()
		return
	}
	saved, firstLen := slices.Clone(*rc.saved), int(rc.firstLen)
	f, req, callerName := rc.again(saved, firstLen)
	if err := r.retry.Route(c); err != nil {
		rc.mu.Unlock()
		return // no other instance at hand: the first attempt goes on alone
	}
	dst := c.Conn
	out := r.firstFrame(make([]byte, 0, len(saved)+64), f, &req, c, callerName)
	out = append(out, saved[firstLen:]...)
	h.dst, h.dstID, h.checkRes = dst, dst.NewID(), r.isLocal(c)
	h.attempt = r.bal.Send(c)
	primary := rc.rec.cur // ends the call, until the hedge wins
	h.rec = notRecorded
	if rc.rec.n < maxRecorded {
		rc.rec.add(c.Instance(), c.Choice())
		h.rec = rc.rec.n - 1
		rc.rec.attempt(int(h.rec)).hedge = true
	}
	rc.rec.cur = primary
	frame.SetIDs(out, h.dstID)
	frame.SetCallReqTTL(out, ttlMillis(rc.deadline, r.bal.TryTimeout(c)))
	if rc.hop.TraceID != 0 {
		frame.SetCallReqTracing(out, rc.hop)
	}
	if rc.trace != nil {
		rc.trace.events = append(rc.trace.events, tracing.Event{Name: "hedge", Time: time.Now(), Attrs: []attribute.KeyValue{
			attribute.String("mesh.instance", c.Instance().ID)}})
	}
	dstID := h.dstID
	c.Headers, c.Caller = nil, nil // they alias saved, which is not kept
	rc.mu.Unlock()
	r.bal.HedgeSent(c.Service)
	r.table(dst).add(dstID, rc, true)
	if err := r.send(dst, out, false); err != nil { // a timer's goroutine: never waits
		r.dropAttempt(rc, dst, dstID, frame.ErrCodeNetwork)
	}
}

// settleHedge handles a frame from dst for attempt dstID of rc while rc
// may have two attempts in flight: the first answer decides (the other is
// cancelled), and an error from one while the other is in flight drops
// the failed one. It reports whether the frame is handled (an error
// dropped), so the caller must not forward it.
func (r *Relay) settleHedge(rc *relayed, dst *conn.Conn, dstID uint32, isError bool, code frame.ErrCode) bool {
	rc.mu.Lock()
	if rc.done {
		rc.mu.Unlock()
		return false
	}
	h := rc.hedge
	fromHedge := h != nil && h.dst != nil && dst == h.dst && dstID == h.dstID
	if !fromHedge && (dst != rc.dst || dstID != rc.dstID) {
		rc.mu.Unlock()
		return true // an attempt that lost or failed, read before it was forgotten: dropped
	}
	if h == nil {
		rc.mu.Unlock()
		return false
	}
	if h.dst == nil { // answered before a hedge went: none will
		h.timer.Stop()
		rc.hedge = nil
		rc.mu.Unlock()
		return false
	}
	if isError {
		rc.mu.Unlock()
		r.dropAttempt(rc, dst, dstID, code)
		return true
	}
	// The first answer: the other attempt loses.
	loser, loserID, loserAtt, loserRec := h.dst, h.dstID, h.attempt, h.rec
	if fromHedge {
		loser, loserID, loserAtt, loserRec = rc.dst, rc.dstID, rc.attempt, rc.rec.cur
		rc.dst, rc.dstID, rc.attempt, rc.rec.cur = h.dst, h.dstID, h.attempt, h.rec
		rc.checkRes, rc.resAsm = h.checkRes, frame.Assembler{}
	}
	rc.hedge = nil
	rc.rec.endAt(int(loserRec), routing.CallerGone, loserAtt.Took())
	if loserRec < rc.rec.n {
		rc.rec.attempt(int(loserRec)).lost = true
	}
	if rc.trace != nil {
		rc.trace.events = append(rc.trace.events, tracing.Event{Name: "hedge settled", Time: time.Now(), Attrs: []attribute.KeyValue{
			attribute.Bool("mesh.hedge_won", fromHedge)}})
	}
	rc.mu.Unlock()
	r.bal.HedgeEnded(rc.call.Service, fromHedge)
	r.cancelAttempt(rc, loser, loserID, loserAtt, "the other attempt of a hedged call answered first")
	return false
}

// dropAttempt ends one of rc's two attempts in flight, the one sent on dst
// as dstID, which failed with code: the other goes on alone. It reports
// whether rc had two (else the failure is the call's, as without hedges).
func (r *Relay) dropAttempt(rc *relayed, dst *conn.Conn, dstID uint32, code frame.ErrCode) bool {
	rc.mu.Lock()
	h := rc.hedge
	if h == nil || h.dst == nil || rc.done {
		rc.mu.Unlock()
		return false
	}
	att, idx := h.attempt, h.rec
	if dst == rc.dst && dstID == rc.dstID { // the first attempt failed: the hedge carries on
		att, idx = rc.attempt, rc.rec.cur
		rc.dst, rc.dstID, rc.attempt, rc.rec.cur = h.dst, h.dstID, h.attempt, h.rec
		rc.checkRes, rc.resAsm = h.checkRes, frame.Assembler{}
	} else if dst != h.dst || dstID != h.dstID {
		rc.mu.Unlock()
		return false
	}
	rc.hedge = nil
	rc.rec.endAt(int(idx), routing.Failed(code), att.Took())
	rc.mu.Unlock()
	r.remove(dst, dstID, rc, true)
	att.Done(routing.Failed(code))
	return true
}

// cancelAttempt tells the instance of an attempt that lost that its answer
// is no longer wanted, and forgets it.
func (r *Relay) cancelAttempt(rc *relayed, dst *conn.Conn, dstID uint32, att routing.Attempt, why string) {
	r.remove(dst, dstID, rc, true)
	att.Done(routing.CallerGone)
	if b, err := frame.AppendCancel(nil, dstID, frame.Cancel{Tracing: rc.hop, Why: []byte(why)}); err == nil {
		r.send(dst, b, false)
	}
}

// endHedge stops rc's hedge when the call ends (finish): its timer, and
// the attempt if one is in flight, which is cancelled. Called under rc.mu;
// it returns what to cancel once unlocked (dst nil: nothing).
func (rc *relayed) endHedge() (dst *conn.Conn, dstID uint32, att routing.Attempt) {
	h := rc.hedge
	if h == nil {
		return nil, 0, routing.Attempt{}
	}
	rc.hedge = nil
	h.timer.Stop()
	if h.dst != nil {
		rc.rec.endAt(int(h.rec), routing.CallerGone, h.attempt.Took())
	}
	return h.dst, h.dstID, h.attempt
}
