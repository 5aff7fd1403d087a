package routing

import (
	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/frame"
)

// Finder is what Discover needs of a registry (discovery.Registry's
// Lookup): the instances known now, or ready while the first answer about
// service is still to come.
type Finder interface {
	Lookup(service string) (insts []discovery.Instance, ready <-chan struct{}, err error)
}

// Discover is the stage that finds a service's healthy instances.
type Discover struct{ From Finder }

func (Discover) Name() string { return StageDiscover }

// Route sets c.Instances, or refuses the call when there are none; before
// the registry's first answer about the service it asks to wait (ErrWait).
func (d Discover) Route(c *Call) error {
	insts, ready, err := d.From.Lookup(c.Service)
	if ready != nil {
		c.Wait = ready
		return ErrWait
	}
	if err != nil || len(insts) == 0 {
		return frame.Errorf(frame.ErrCodeDeclined, "no healthy instances of service %q", c.Service)
	}
	c.Instances, c.eps, c.Picked = insts, nil, -1
	c.unreachable = c.unreachable[:0]
	return nil
}
