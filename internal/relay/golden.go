package relay

import (
	"bytes"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/golden"
	"github.com/meshrpc/mesh/internal/routing"
)

// Each call from an app is counted once, by this meshd, on its edge:
// caller (the proven identity), service, method (internal/golden). A call
// from another meshd was counted there. A refusal by the meshd that
// delivers a call reaches the first as an error frame whose message says
// the stage (refusedAt), so the first meshd counts it by its cause too.

// refusedAt is how a meshd's refusal of a call on its last hop begins its
// message, followed by the stage and ": ".
const refusedAt = "meshd refused at "

// stages lists every stage and check that can refuse a call, each a
// result of mesh_calls_total.
func (r *Relay) stages() []string {
	var out []string
	for _, e := range r.prologue {
		out = append(out, e.name)
	}
	for _, p := range []routing.Pipeline{r.firstHop, r.lastHop} {
		for _, s := range p {
			out = append(out, s.Name())
		}
	}
	return out
}

// edgeOf is the edge of rc, a call from an app whose first frame is f:
// service names a service only once one was found under it (routed is
// true, or it was routed to before), so made-up names are not labels.
func (r *Relay) edgeOf(rc *relayed, f *frame.Frame, req *frame.CallReq, routed bool) *golden.Edge {
	if r.cfg.NoEdges {
		return nil
	}
	c := &rc.call
	service, method := golden.Unknown, golden.Unknown
	if routed || r.names.has(c.Service) {
		service = c.Service
		if c.Method != "" {
			method = c.Method
		}
	}
	caller := r.names.intern(c.Caller)
	return r.edges.Edge(caller, service, method)
}

// keepMethod interns the method of a call that was routed, so the next
// call of it turns it into a string without allocating.
func (r *Relay) keepMethod(c *routing.Call) {
	if c.Method != "" {
		r.names.keep(c.Method)
	}
}

// beforeDiscovery reports whether a refusal at stage came before the
// call's service was found: the prologue, a draining meshd, discovery.
func beforeDiscovery(stage string) bool {
	switch stage {
	case StageCheck, StageConnLimit, StageDrain, routing.StageDiscover:
		return true
	}
	return false
}

// countCall counts a first hop's call rc, which ended as o, on its edge
// (nil: not a first hop's), as refusal when another meshd refused it; it
// returns the result and the call's time, for its record.
func (r *Relay) countCall(rc *relayed, edge *golden.Edge, refusal golden.Result, o routing.Outcome, sampled bool) (golden.Result, time.Duration) {
	res := golden.Answer(o.Code, o.AppErr)
	if refusal != 0 {
		res = refusal
	}
	took := rc.call.Took()
	if edge != nil {
		var tid trace.TraceID
		if sampled {
			tid = rc.traceID()
		}
		edge.Done(res, took, tid)
	}
	return res, took
}

// remoteRefusal is the result of an error frame's payload from another
// meshd, when it says a stage there refused the call (0: it does not).
func (r *Relay) remoteRefusal(payload []byte) golden.Result {
	m, err := frame.DecodeError(payload)
	if err != nil {
		return 0
	}
	_, rest, ok := bytes.Cut(m.Message, []byte(refusedAt))
	if !ok {
		return 0
	}
	stage, _, ok := bytes.Cut(rest, []byte(": "))
	if !ok {
		return 0
	}
	return r.edges.Refused(string(stage))
}
