package relay

import (
	"fmt"

	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/conn"
	"github.com/meshrpc/mesh/internal/routing"
)

// The mesh's edge is where a call or its answer comes from an app: the
// caller's meshd checks the request, the instance's meshd its answer. Each
// frame's args are checked against the message so far (frame.Assembler: the
// number and order of args, the fragmentation rules, and the checksum of
// every type), so a frame the next peer would refuse as a protocol error,
// and close its connection over, never leaves this meshd: a malformed call
// fails alone, and one app cannot break another's connection. Frames from
// other meshds were checked at their edge.

// checkRequest is the prologue's edge check of a call's first frame: no
// routing header only meshds may set (source.go), and a well-formed
// message so far.
func (r *Relay) checkRequest(_ *conn.Conn, rc *relayed, req *frame.CallReq, frag *frame.Fragment) error {
	if h := reservedHeader(req.Headers); h != "" {
		return frame.Errorf(frame.ErrCodeBadRequest, "header %q is set by meshd, not by callers", h)
	}
	if err := check(&rc.reqAsm, frag, &rc.arg1); err != nil {
		r.stats.badRequests.Add(1)
		return frame.Errorf(frame.ErrCodeBadRequest, "malformed call: %s", err.Error())
	}
	return nil
}

// isLocal reports whether c's instance is an app on this host.
func (r *Relay) isLocal(c *routing.Call) bool { return c.Instance().Addr == r.cfg.Self }

// check adds one frame's args to the message asm follows. For a request,
// arg1 (counted in *arg1) may be at most frame.MaxArg1Size bytes, as the
// protocol says: a method that never ends is refused, not forwarded.
func check(asm *frame.Assembler, frag *frame.Fragment, arg1 *int32) error {
	if frag == nil {
		return nil
	}
	first, err := asm.Add(frag)
	if err != nil || arg1 == nil || first > 0 || frag.NumChunks == 0 {
		return err
	}
	if *arg1 += int32(len(frag.Chunks[0])); *arg1 > frame.MaxArg1Size {
		return fmt.Errorf("arg1 (the method) exceeds %d bytes", frame.MaxArg1Size)
	}
	return nil
}

// abandon ends a call whose request or answer failed the edge check: the
// instance is told to drop it, and the caller hears why, with code.
func (r *Relay) abandon(rc *relayed, code frame.ErrCode, why string) {
	rc.mu.Lock()
	dst, dstID := rc.dst, rc.dstID
	rc.mu.Unlock()
	o := routing.CallerGone // the caller's fault: nothing to learn about the instance
	if code != frame.ErrCodeBadRequest {
		o = routing.Failed(code) // the instance's: its breaker learns it
	}
	if !r.finish(rc, o) {
		return
	}
	if dst == nil {
		// parked (park.go): no callee heard of it
	} else if b, err := frame.AppendCancel(nil, dstID, frame.Cancel{Why: []byte(why)}); err == nil {
		r.send(dst, b, false)
	}
	r.sendError(rc.src, rc.srcID, rc.hop, code, why)
}
