package routing

import "github.com/meshrpc/mesh/frame"

// KillSwitch is the stage that refuses calls from callers the service's
// policy blocks (Policy.Blocked; "*" blocks every caller), before any
// instance is picked: the switch an operator throws to cut a caller off.
type KillSwitch struct{ Balancer *Balancer }

func (KillSwitch) Name() string { return StageKillSwitch }

func (k KillSwitch) Route(c *Call) error {
	if c.lim(k.Balancer).blocked(c.Caller) {
		return frame.Errorf(frame.ErrCodeDeclined, "calls from %q to %q are blocked (kill switch)", c.Caller, c.Service)
	}
	return nil
}
