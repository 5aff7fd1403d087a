package routing

import (
	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/conn"
)

// Connect is the stage that reaches the picked instance: Dial returns the
// connection it is reached on (meshd: the app's own connection, or one to
// the instance's meshd; the SDK: one to the peer). An instance Dial cannot
// reach is excluded and the Balancer picks again, until one is reached or
// none is left.
type Connect struct {
	Balancer *Balancer
	Dial     func(discovery.Instance) (*conn.Conn, error)
}

func (Connect) Name() string { return StageConnect }

// Route sets c.Conn.
func (s Connect) Route(c *Call) error {
	for {
		cn, err := s.Dial(c.Instance())
		if err == nil {
			c.Conn = cn
			return nil
		}
		c.Exclude()
		if perr := s.Balancer.Route(c); perr != nil {
			if e, ok := perr.(*frame.Error); ok {
				e.Message += ": " + err.Error() // the last reason says most
			}
			return perr
		}
	}
}
