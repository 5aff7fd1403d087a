package routing

import (
	"context"
	"errors"

	"github.com/meshrpc/mesh/frame"
)

// A Stage makes one routing decision for a call, reading what the stages
// before it decided and writing its own into c. An error, a *frame.Error
// with the wire code the caller hears, stops the call.
//
// Name is the stage's name in explanations, spans and metrics: one of the
// Stage constants below for routing's own stages.
type Stage interface {
	Name() string
	Route(c *Call) error
}

// ErrWait is a stage's answer when it cannot decide without waiting (the
// first lookup of a service, a dial under way): c.Wait is then closed when
// it can, and Resume runs the pipeline on from that stage. Nothing in a
// Pipeline waits itself, so meshd's relay can route on a connection's read
// loop and park the calls that must wait; the SDK waits for them in the
// caller's goroutine (RouteWaiting).
var ErrWait = errors.New("routing: a stage must wait")

// Pipeline runs stages in order until one refuses the call. The order is
// data: meshd declares its pipelines in one place (internal/relay's
// pipeline.go), the SDK's direct mode in client/direct.go.
type Pipeline []Stage

// Route runs every stage on c, until one refuses it or must wait (ErrWait);
// StoppedAt then names that stage.
func (p Pipeline) Route(c *Call) error {
	c.at = 0
	return p.Resume(c)
}

// Resume runs the stages on from the one that answered ErrWait.
func (p Pipeline) Resume(c *Call) error {
	for ; int(c.at) < len(p); c.at++ {
		s := p[c.at]
		if err := s.Route(c); err != nil {
			return err
		}
	}
	c.Wait = nil
	return nil
}

// StoppedAt names the stage at which the last Route or Resume of c
// stopped: the one that refused it, or must wait.
func (p Pipeline) StoppedAt(c *Call) string {
	if int(c.at) < len(p) {
		return p[c.at].Name()
	}
	return ""
}

// RouteWaiting runs every stage on c and waits, within ctx, wherever one
// must: for callers that may (the SDK in its caller's goroutine). A wait
// that outlasts ctx is a Timeout (or Cancelled) refusal of that stage.
func (p Pipeline) RouteWaiting(ctx context.Context, c *Call) error {
	err := p.Route(c)
	for err == ErrWait {
		select {
		case <-c.Wait:
		case <-ctx.Done():
			code := frame.ErrCodeTimeout
			if errors.Is(ctx.Err(), context.Canceled) {
				code = frame.ErrCodeCancelled
			}
			return frame.Errorf(code, "routing waited for %s until the call's end", p.StoppedAt(c))
		}
		err = p.Resume(c)
	}
	return err
}

// The names of routing's stages, as explanations, spans and metrics (the
// stage label of mesh_stage_refusals_total) show them.
const (
	StageDiscover    = "discover"
	StageAuthorize   = "authorize"
	StageKillSwitch  = "kill_switch"
	StageCallerLimit = "caller_limit"
	StageBalance     = "balance"
	StageConnect     = "connect"
	StageAdmission   = "admission"
)
