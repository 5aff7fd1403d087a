package routing

import "github.com/meshrpc/mesh/frame"

// CallerLimit is the stage that holds each caller to the service's
// per-caller rate (Policy.CallerRateLimit), at the caller's own meshd: one
// busy caller is answered Busy without touching the service.
type CallerLimit struct{ Balancer *Balancer }

func (CallerLimit) Name() string { return StageCallerLimit }

func (l CallerLimit) Route(c *Call) error {
	lim := c.lim(l.Balancer)
	if !lim.callerAllowed(c.Caller, c.Now()) {
		return frame.Errorf(frame.ErrCodeBusy, "caller %q is over its limit of %g calls/s to %q", c.Caller, lim.policy.CallerRateLimit, c.Service)
	}
	return nil
}
