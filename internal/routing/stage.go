package routing

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

// Pipeline runs stages in order until one refuses the call. The order is
// data: meshd declares its pipelines in one place (internal/relay's
// pipeline.go), the SDK's direct mode in client/direct.go.
type Pipeline []Stage

// Route runs every stage on c; on a refusal c.RefusedBy names the stage.
func (p Pipeline) Route(c *Call) error {
	for _, s := range p {
		if err := s.Route(c); err != nil {
			c.RefusedBy = s.Name()
			return err
		}
	}
	return nil
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
