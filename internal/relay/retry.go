package relay

import (
	"context"
	"fmt"
	"slices"
	"time"

	"go.opentelemetry.io/otel/attribute"

	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/conn"
	"github.com/meshrpc/mesh/internal/routing"
	"github.com/meshrpc/mesh/internal/tracing"
)

// Whether a failed attempt is retried is the Balancer's decision
// (MayRetry: the "re" flags, attempts left, time left, the retry budget),
// the same one the SDK's direct mode asks. What is the relay's own is
// resending: a call keeps its request's frames until answered, and once the
// whole request has passed through it can send them again under a new id.

// maxRetryBytes bounds the request frames kept for a retry: a larger
// request is forwarded as it streams and not retried.
const maxRetryBytes = 256 << 10

// save keeps the first frame as it arrived, for a retry, if the caller's
// connection and the meshd have room for it (Limits.SavedPerConn, SavedTotal).
// Called before rc is shared.
func (r *Relay) save(rc *relayed, raw []byte) {
	if !r.mayKeep(rc.srcT, len(raw)) {
		return
	}
	bp, _ := r.saved.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	*bp = append((*bp)[:0], raw...)
	rc.saved, rc.firstLen = bp, int32(len(raw))
}

// keep saves a continuation frame of the request, until the bounds: one
// call's maxRetryBytes, and the limits on what is kept. Called under rc.mu.
func (r *Relay) keep(rc *relayed, raw []byte) {
	if rc.saved == nil || rc.tooBig {
		return
	}
	if len(*rc.saved)+len(raw) > maxRetryBytes || !r.mayKeep(rc.srcT, len(raw)) {
		rc.tooBig = true
		return
	}
	*rc.saved = append(*rc.saved, raw...)
}

// retryAfter decides, when the attempt sent on dst as dstID failed with
// code, whether to try another instance, and if so ends the attempt and
// schedules the next. It reports whether it did (the caller must then not
// forward the failure). Only a request that passed through whole, and was
// kept whole, can be sent again.
func (r *Relay) retryAfter(rc *relayed, dst *conn.Conn, dstID uint32, code frame.ErrCode) bool {
	rc.mu.Lock()
	if rc.done || rc.between || rc.dst != dst || rc.dstID != dstID || !rc.reqDone || rc.saved == nil || rc.tooBig ||
		!r.bal.MayRetry(&rc.call, code, time.Until(rc.deadline)) {
		rc.mu.Unlock()
		return false
	}
	rc.between = true // this attempt is over; the call is not
	att := rc.attempt
	rc.attempt = routing.Attempt{}
	rc.rec.end(routing.Failed(code), att.Took())
	stopTimer(&rc.tryTimer) // the next attempt gets its own
	if rc.trace != nil {
		rc.trace.events = append(rc.trace.events, tracing.Event{Name: "retry", Time: time.Now(), Attrs: []attribute.KeyValue{
			attribute.String("mesh.instance", rc.call.Instance().ID), attribute.String("mesh.cause", code.String())}})
	}
	n, left, sampled := len(rc.call.Tried), time.Until(rc.deadline), rc.trace != nil
	rc.mu.Unlock()
	r.remove(dst, dstID, rc, true)
	if sampled {
		att.DoneSampled(routing.Failed(code), rc.traceID())
	} else {
		att.Done(routing.Failed(code))
	}
	time.AfterFunc(routing.Backoff(n, left), func() { r.resend(rc, code) })
	return true
}

// resend routes the call again (the retry pipeline) and sends its saved
// request frames to the instance picked.
func (r *Relay) resend(rc *relayed, lastCode frame.ErrCode) {
	rc.mu.Lock()
	if rc.done {
		rc.mu.Unlock()
		return
	}
	saved, firstLen := slices.Clone(*rc.saved), int(rc.firstLen)
	rc.mu.Unlock()
	f, req, callerName := rc.again(saved, firstLen)
	c := &rc.call
	// A timer's goroutine, not a read loop: it may wait for a first lookup or
	// a dial, within the call's deadline.
	ctx, cancel := context.WithDeadline(context.Background(), rc.deadline)
	err := r.retry.RouteWaiting(ctx, c)
	cancel()
	if err != nil {
		if r.finish(rc, routing.CallerGone) {
			r.sendError(rc.src, rc.srcID, rc.hop, lastCode, "retry found no other instance: "+err.Error())
		}
		return
	}
	out := r.firstFrame(make([]byte, 0, len(saved)+64), f, &req, c, callerName)
	out = append(out, saved[firstLen:]...) // the continuation frames follow
	tryTimeout := r.bal.TryTimeout(c)
	dst := c.Conn

	rc.mu.Lock()
	if rc.done {
		rc.mu.Unlock()
		return
	}
	rc.dst, rc.dstID, rc.between = dst, dst.NewID(), false
	rc.checkRes, rc.resAsm = r.isLocal(c), frame.Assembler{} // a new answer to check
	rc.attempt = r.bal.Send(c)
	rc.rec.add(c.Instance(), c.Choice())
	frame.SetIDs(out, rc.dstID)
	frame.SetCallReqTTL(out, ttlMillis(rc.deadline, tryTimeout))
	if rc.hop.TraceID != 0 {
		frame.SetCallReqTracing(out, rc.hop)
	}
	dstID := rc.dstID
	rc.mu.Unlock()
	r.table(dst).add(dstID, rc, true)
	r.watchAttempt(rc, dst, dstID, tryTimeout)
	if err := r.send(dst, out, false); err != nil { // from a timer or the failed instance's read loop: never waits
		if r.finish(rc, routing.Failed(frame.ErrCodeNetwork)) {
			r.sendError(rc.src, rc.srcID, rc.hop, frame.ErrCodeNetwork, "forwarding failed: "+err.Error())
		}
	}
}

// again readies rc's call to be routed once more from saved, a copy of
// its request's frames whose first is firstLen bytes: the first frame, its
// header, the call's headers (which alias saved) and its proven caller.
func (rc *relayed) again(saved []byte, firstLen int) (f *frame.Frame, req frame.CallReq, callerName string) {
	var frag frame.Fragment
	f = &frame.Frame{Raw: saved[:firstLen], Payload: saved[frame.HeaderSize:firstLen]}
	f.Header, _ = frame.ParseHeader(f.Raw)
	frame.DecodeCallReq(f.Payload, &req, &frag)
	c := &rc.call
	c.SetHeaders(req.Headers)
	c.Caller, callerName = callerOf(rc.src, nil) // SetHeaders read "cn": the proven caller counts
	return f, req, callerName
}

// watchAttempt ends the attempt sent on dst as dstID if no answer came
// within the per-attempt timeout: the next hop should have answered Timeout
// by then, so it is unreachable (a partition, a hung process). The attempt
// counts as timed out: retried elsewhere when the flags allow, else the
// caller hears it.
func (r *Relay) watchAttempt(rc *relayed, dst *conn.Conn, dstID uint32, timeout time.Duration) {
	if timeout <= 0 {
		return
	}
	grace := timeout + timeout/4 + 50*time.Millisecond // room for the next hop's own Timeout answer
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.done {
		return
	}
	ct := r.newTimer(rc, &rc.tryTimer, attemptTimedOut)
	ct.dst, ct.dstID, ct.timeout = dst, dstID, timeout
	ct.start(grace)
}

// attemptTimedOut is watchAttempt's timer firing: it ends the attempt it
// was armed for, if that is still the call's current one.
func attemptTimedOut(ct *callTimer) {
	r, rc, dst, dstID := ct.r, ct.rc, ct.dst, ct.dstID
	rc.mu.Lock()
	current := !rc.done && !rc.between && rc.dst == dst && rc.dstID == dstID
	rc.mu.Unlock()
	if !current {
		return
	}
	if b, err := frame.AppendCancel(nil, dstID, frame.Cancel{Why: []byte("attempt timed out")}); err == nil {
		r.send(dst, b, false)
	}
	if r.dropAttempt(rc, dst, dstID, frame.ErrCodeTimeout) || r.retryAfter(rc, dst, dstID, frame.ErrCodeTimeout) {
		return
	}
	if r.finish(rc, routing.Failed(frame.ErrCodeTimeout)) {
		r.sendError(rc.src, rc.srcID, rc.hop, frame.ErrCodeTimeout, fmt.Sprintf("no answer within the %v attempt timeout", ct.timeout))
	}
}
