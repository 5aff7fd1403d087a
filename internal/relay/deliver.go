package relay

import (
	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/routing"
)

// deliver is the last hop's discover stage: the call is for the local
// instance its routing header (HeaderInstance) names, or, when the first
// meshd could not add the header or that instance just left, any local
// instance of the service, in turn. It sets the instance and its app's
// connection; the call is never forwarded again.
type deliver struct{ r *Relay }

func (deliver) Name() string { return StageDeliver }

func (d deliver) Route(c *routing.Call) error {
	if id, ok := c.Headers.Get(HeaderInstance); ok {
		if l := d.r.local(string(id)); l != nil {
			c.Instances, c.Picked, c.Conn = l.inst, 0, l.conn
			return nil
		}
	}
	d.r.localMu.RLock()
	ids := d.r.byService[c.Service]
	d.r.localMu.RUnlock()
	if len(ids) > 0 {
		if l := d.r.local(ids[d.r.bal.Turn(c.Service)%uint64(len(ids))]); l != nil {
			c.Instances, c.Picked, c.Conn = l.inst, 0, l.conn
			return nil
		}
	}
	return frame.Errorf(frame.ErrCodeDeclined, "service %q has no instance on this host any more", c.Service)
}
