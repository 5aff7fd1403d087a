package relay

import (
	"errors"
	"time"

	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/conn"
	"github.com/meshrpc/mesh/internal/golden"
)

// refuseCall answers a call a stage refused, and records why.
func (r *Relay) refuseCall(c *conn.Conn, f *frame.Frame, req *frame.CallReq, rc *relayed, stage string, err error) {
	e, ok := err.(*frame.Error)
	if !ok {
		e = &frame.Error{Code: frame.ErrCodeUnexpected, Message: err.Error()}
	}
	service, caller := rc.call.Service, rc.call.Caller
	label := service
	if !r.names.has(service) && beforeDiscovery(stage) {
		label = golden.Unknown
	}
	r.countRefusal(stage, label)
	tid := r.refusedSpan(f, req, service, caller, stage, e)
	took := rc.call.Took()
	msg := e.Message
	res := r.edges.Refused(stage)
	if rc.lastHop { // the first meshd counts the call by this cause (golden.go)
		msg = refusedAt + stage + ": " + msg
	} else if !rc.done { // a parked call that ended was counted by finish
		if rc.rec.edge = r.edgeOf(rc, f, req, !beforeDiscovery(stage)); rc.rec.edge != nil {
			rc.rec.edge.Done(res, took, tid)
		}
	}
	rec := record{at: time.Now(), service: service, stage: stage, refused: e.Message, code: e.Code,
		caller: r.names.intern(caller), edge: rc.rec.edge, result: res, took: took}
	rec.setTrace(req.Tracing)
	copy(rec.traceID[:8], tid[:8]) // the high half refusedSpan read (zero: not sampled)
	r.recent.add(&rec)
	r.refuse(c, f.ID, req.Tracing, e.Code, msg)
}

func (r *Relay) refuse(c *conn.Conn, id uint32, t frame.Tracing, code frame.ErrCode, msg string) {
	r.stats.refused.Add(1)
	r.sendError(c, id, t, code, msg)
}

func (r *Relay) sendError(c *conn.Conn, id uint32, t frame.Tracing, code frame.ErrCode, msg string) {
	if err := c.TryWrite(frame.AppendError(nil, id, frame.ErrorMsg{Code: code, Tracing: t, Message: []byte(msg)})); err != nil {
		r.slowPeer(c, err)
	}
}

// slowPeer deals with a caller whose write buffer is full, found from a read
// loop that must not wait for it: an app that stopped reading loses its
// connection (its calls fail, no one else's); from another meshd the frame
// is dropped and the call ends (that meshd's own timer answers its caller).
func (r *Relay) slowPeer(c *conn.Conn, err error) {
	r.countSlow(err)
	if !fromMeshd(c) && slow(err) {
		c.Fail(err)
	}
}

// send writes frames to a callee. Only an app's own read loop may wait
// for a slow callee (wait): that pushes back on the app alone. Every other
// writer (another meshd's read loop, which serves all its host's calls; an
// instance's read loop retrying elsewhere; timers) must not, so the frames
// a callee's full queue refuses are counted, and fail their call.
func (r *Relay) send(dst *conn.Conn, b []byte, wait bool) error {
	if wait {
		return dst.Write(b)
	}
	err := dst.TryWrite(b)
	if err != nil {
		r.countSlow(err)
	}
	return err
}

// slow reports whether a write failed for a peer not keeping up.
func slow(err error) bool { return errors.Is(err, conn.ErrFull) || errors.Is(err, conn.ErrQueuesFull) }

func (r *Relay) countSlow(err error) {
	switch {
	case errors.Is(err, conn.ErrQueuesFull):
		r.stats.limited[limitQueuesFull].Add(1)
	case errors.Is(err, conn.ErrFull):
		r.stats.limited[limitSlowPeer].Add(1)
	}
}
