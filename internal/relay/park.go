package relay

import (
	"slices"
	"time"

	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/conn"
	"github.com/meshrpc/mesh/internal/routing"
)

// A call whose route must wait (the first lookup of its service, a dial to
// its instance's meshd: a stage answered routing.ErrWait) is parked: the
// read loop it came on goes on with the connection's other calls at once,
// its frames are held as a retry holds them (within the same bounds), and
// a goroutine of its own routes it on, from the stage that waited, when
// what it waits for is ready. It waits within its deadline: its TTL timer
// answers the caller Timeout as for any call. Frames that come meanwhile
// are held too (Frame), a cancel or a caller gone ends it (no callee heard
// of it), and once routed it goes out as one write of all it holds, under
// its lock, so the frames that follow cannot overtake it.

// park holds rc, whose first frame f came on src, off src's read loop.
func (r *Relay) park(src *conn.Conn, f *frame.Frame, req *frame.CallReq, rc *relayed) {
	c := &rc.call
	rc.src, rc.srcID = src, f.ID
	rc.between = true // no attempt on the wire
	rc.reqDone = req.Flags&frame.FlagMoreFragments == 0
	ttl, _ := r.ttlOf(req)
	now := time.Now()
	rc.deadline = now.Add(ttl)
	rc.rec.at, rc.rec.service = now, c.Service
	rc.rec.setTrace(req.Tracing)
	rc.rec.caller = r.names.intern(c.Caller)
	r.save(rc, f.Raw)
	if rc.saved == nil {
		c.Release()
		r.refuseCall(src, f, req, rc, StageConnLimit, frame.Errorf(frame.ErrCodeBusy,
			"meshd holds no more request bytes of this connection's calls (its route had to wait)"))
		return
	}
	// The headers alias the read loop's buffer: unpark points them at the
	// held copy.
	c.Headers, c.AppHeaders = nil, nil
	rc.rec.edge = r.edgeOf(rc, f, req, false) // until it is routed: a timeout counts here
	wait := c.Wait
	r.countParked(c)
	r.inflight.Add(1)
	rc.srcT.add(rc.srcID, rc, false)
	rc.mu.Lock()
	if !rc.reqDone {
		rc.srcT.halfFrom.Add(1)
		rc.countedFrom = true
	}
	ct := r.newTimer(rc, &rc.timer, expired)
	ct.tr = req.Tracing
	ct.start(ttl)
	rc.mu.Unlock()
	go r.unpark(rc, wait)
}

// unpark waits for what rc's route waits on, runs the rest of its
// pipeline, and sends it; it gives up at rc's deadline (the TTL timer has
// answered the caller by then) or when rc ended meanwhile.
func (r *Relay) unpark(rc *relayed, wait <-chan struct{}) {
	c := &rc.call
	timeout := time.NewTimer(time.Until(rc.deadline))
	defer timeout.Stop()
	for {
		select {
		case <-wait:
		case <-timeout.C:
			return
		}
		// Under the call's lock: a timer or the caller's cancel may end the
		// call at any time, and must not meet the stages at work on it.
		rc.mu.Lock()
		if rc.done {
			rc.mu.Unlock()
			return
		}
		first := slices.Clone((*rc.saved)[:rc.firstLen])
		var req frame.CallReq
		var frag frame.Fragment
		f := &frame.Frame{Raw: first, Payload: first[frame.HeaderSize:]}
		f.Header, _ = frame.ParseHeader(first)
		frame.DecodeCallReq(f.Payload, &req, &frag)
		caller := c.Caller
		c.SetHeaders(req.Headers) // in the held copy
		c.AppHeaders = frame.CallReqArg2(f.Payload, &req)
		c.Caller = caller // SetHeaders read "cn": the proven caller counts
		err := r.firstHop.Resume(c)
		if err == routing.ErrWait {
			r.countParked(c)
			wait = c.Wait
			rc.mu.Unlock()
			continue
		}
		if err != nil {
			stage := r.firstHop.StoppedAt(c)
			rc.refusal = r.edges.Refused(stage) // finish counts it so
			rc.rec.edge = r.edgeOf(rc, f, &req, !beforeDiscovery(stage))
			rc.mu.Unlock()
			if r.finish(rc, routing.CallerGone) {
				r.refuseCall(rc.src, f, &req, rc, stage, err)
			}
			return
		}
		r.names.keep(c.Service) // a service that was routed to: worth keeping
		r.keepMethod(c)
		rc.rec.edge = r.edgeOf(rc, f, &req, true)
		r.dispatch(rc, f, &req) // unlocks
		return
	}
}

// countParked counts a wait of c's route, by the stage that waits.
func (r *Relay) countParked(c *routing.Call) {
	if r.firstHop.StoppedAt(c) == routing.StageConnect {
		r.stats.parked[1].Add(1)
	} else {
		r.stats.parked[0].Add(1)
	}
}

// dispatch sends a parked call, routed now, to its instance: its first
// frame f (req decoded from it) as the first hop writes it, then the
// frames held since. Called with rc.mu held; it unlocks.
func (r *Relay) dispatch(rc *relayed, f *frame.Frame, req *frame.CallReq) {
	c := &rc.call
	_, callerName := callerOf(rc.src, nil)
	dst := c.Conn
	out := r.firstFrame(make([]byte, 0, len(*rc.saved)+64), f, req, c, callerName)
	out = append(out, (*rc.saved)[rc.firstLen:]...)
	rc.dst, rc.dstID, rc.between = dst, dst.NewID(), false
	rc.checkRes = r.isLocal(c)
	rc.attempt = r.bal.Send(c)
	rc.rec.add(c.Instance(), c.Choice())
	tryTimeout := r.bal.TryTimeout(c)
	frame.SetIDs(out, rc.dstID)
	frame.SetCallReqTTL(out, ttlMillis(rc.deadline, tryTimeout))
	r.startSpan(rc, f, req, out, rc.rec.at)
	t := r.table(dst)
	t.add(rc.dstID, rc, true) // before it is sent: the answer can come at once
	if !rc.reqDone {
		rc.half = t
		t.halfSent.Add(1)
	}
	dstID := rc.dstID
	err := r.send(dst, out, false) // under the lock: the frames still to come go after it
	rc.mu.Unlock()
	if err != nil {
		if r.finish(rc, routing.Failed(frame.ErrCodeNetwork)) {
			r.sendError(rc.src, rc.srcID, rc.hop, frame.ErrCodeNetwork, "forwarding failed: "+err.Error())
		}
		return
	}
	r.watchAttempt(rc, dst, dstID, tryTimeout)
	r.stats.relayed.Add(1)
}
