package routing

import (
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/meshrpc/mesh/frame"
)

// Attempt is one try of a call at the instance the Balancer picked, from
// Send to its Done. The zero Attempt is none: its Done does nothing.
type Attempt struct {
	ep    *endpoint
	start int64 // nanoseconds after epoch (monotonic): a word, where a time.Time takes three
}

// Send starts an attempt at c's picked instance: the instance has one more
// call in flight, c.Tried lists it, and the call's first attempt counts
// toward the service's retry budget. Done on the result tells the
// Balancer how the attempt ended.
func (b *Balancer) Send(c *Call) Attempt {
	e := c.eps[c.Picked]
	e.pending.Add(1)
	if len(c.Tried) == 0 {
		e.svc.deposit()
		if len(c.lim(b).policy.HedgeMethods) > 0 { // a lock and an exp per call: only for services that hedge
			e.svc.hedgeBudget.deposit()
		}
	}
	if k, crossed := c.choice.crossedZone(e); crossed {
		e.svc.crossZone[k].Add(1)
	}
	c.Tried = append(c.Tried, e.id)
	return Attempt{ep: e, start: int64(time.Since(epoch))}
}

// Took is the time since the attempt was sent (0 for the zero Attempt).
func (a Attempt) Took() time.Duration {
	if a.ep == nil {
		return 0
	}
	return time.Since(epoch) - time.Duration(a.start)
}

// Done tells the Balancer how the attempt ended: the instance's latency
// average, breaker and counters learn from it (a cancelled attempt teaches
// nothing but is no longer in flight). Call it once.
func (a Attempt) Done(o Outcome) { a.ep.judge(a.Took(), o, trace.TraceID{}) }

// DoneSampled is Done for an attempt of a sampled call: traceID becomes
// the exemplar of the instance's latency histogram.
func (a Attempt) DoneSampled(o Outcome, traceID trace.TraceID) { a.ep.judge(a.Took(), o, traceID) }

// Outcome is how an attempt ended. The zero Outcome is a good answer.
type Outcome struct {
	Code   frame.ErrCode // the error frame's code, or the local equivalent; 0 when answered
	AppErr bool          // answered with an application error (still an answer)
}

// The one mapping from how an attempt ended to its Outcome, for the relay
// (which sees frames) and the SDK's direct mode (which sees errors):
//
//	answered                  Answered(appErr): ok or app_error
//	an error frame, or a      Failed(code): timeout, busy, network, ... the
//	local error with a code   breaker counts Timeout, Network, Unexpected,
//	                          Busy and Unhealthy against the instance
//	the caller gave up        CallerGone (code Cancelled): a cancel, a caller
//	                          gone or not reading; nothing is learned of the
//	                          instance, and it is not recorded
var CallerGone = Outcome{Code: frame.ErrCodeCancelled}

// Answered is the Outcome of an attempt that got an answer; appErr marks an
// application error.
func Answered(appErr bool) Outcome { return Outcome{AppErr: appErr} }

// Failed is the Outcome of an attempt that ended with an error frame (or the
// local equivalent) of code; ErrCodeCancelled is CallerGone.
func Failed(code frame.ErrCode) Outcome { return Outcome{Code: code} }

// OutcomeOf is the Outcome of an attempt from what its caller in this
// process saw: an answer (err nil; appErr marks an application error), or
// err, judged by its wire code (frame.CodeOf: a cancelled context is
// Cancelled, a passed deadline Timeout).
func OutcomeOf(appErr bool, err error) Outcome {
	if err != nil {
		return Failed(frame.CodeOf(err))
	}
	return Answered(appErr)
}

// callerGone reports whether the attempt ended because its caller gave up.
func (o Outcome) callerGone() bool { return o.Code == frame.ErrCodeCancelled }

// failed reports whether the outcome counts against the instance (its
// breaker) rather than the call.
func (o Outcome) failed() bool {
	switch o.Code {
	case frame.ErrCodeTimeout, frame.ErrCodeNetwork, frame.ErrCodeUnexpected, frame.ErrCodeBusy, frame.ErrCodeUnhealthy:
		return true
	}
	return false
}

// String is the outcome's result label, as in mesh_calls_total.
func (o Outcome) String() string {
	if o.callerGone() {
		return "cancelled by caller"
	}
	return resultNames[resultSlot(o)]
}
