package relay

import (
	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/routing"
)

// draining is the stage that declines every new call once the meshd is
// draining (Relay.Drain), so callers send them elsewhere while the calls in
// flight finish.
type draining struct{ r *Relay }

func (draining) Name() string { return StageDrain }

func (d draining) Route(*routing.Call) error {
	if d.r.draining.Load() {
		return errDraining
	}
	return nil
}

var errDraining = &frame.Error{Code: frame.ErrCodeDeclined, Message: "meshd is draining"}
