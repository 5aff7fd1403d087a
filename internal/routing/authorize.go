package routing

import "github.com/meshrpc/mesh/frame"

// Authorize is the stage that refuses a call its caller may not make. The
// caller is c.Caller, which meshd sets to the identity the caller proved (the
// service its app connection advertised with proof, or "anonymous"), never
// to what the caller wrote in "cn". Allowed answers from the intentions in
// force, naming the rule that decided; nil allows every call.
//
// meshd runs it on both hops with the same intentions: on the first, so a
// call that will be denied costs no hop; on the last, where the instance is,
// so that only the destination's meshd decides what reaches it.
//
// A denial is a bad request, the one refusal TChannel callers (tchannel-go's
// included) never retry: another instance would deny it too.
type Authorize struct {
	Allowed func(c *Call) (ok bool, rule string)
}

func (Authorize) Name() string { return StageAuthorize }

func (a Authorize) Route(c *Call) error {
	if a.Allowed == nil {
		return nil
	}
	if ok, rule := a.Allowed(c); !ok {
		return frame.Errorf(frame.ErrCodeBadRequest, "call from %q to %q denied by %s", c.Caller, c.Service, rule)
	}
	return nil
}
