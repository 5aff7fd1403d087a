package routing

import (
	"context"

	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/frame"
)

// Finder is what Discover needs of a registry.
type Finder interface {
	Instances(ctx context.Context, service string) ([]discovery.Instance, error)
}

// Discover is the stage that finds a service's healthy instances.
type Discover struct{ From Finder }

func (Discover) Name() string { return StageDiscover }

// Route sets c.Instances, or refuses the call when there are none.
func (d Discover) Route(c *Call) error {
	insts, err := d.From.Instances(context.Background(), c.Service)
	if err != nil || len(insts) == 0 {
		return frame.Errorf(frame.ErrCodeDeclined, "no healthy instances of service %q", c.Service)
	}
	c.Instances, c.eps, c.Picked = insts, nil, -1
	c.unreachable = c.unreachable[:0]
	return nil
}
