package routing

import (
	"errors"
	"time"

	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/conn"
)

// Connect is the stage that reaches the picked instance: Dial returns the
// connection it is reached on (meshd: the app's own connection, or one to
// the instance's meshd; the SDK: one to the peer), or ready while a dial to
// it is under way (Connect then asks to wait, ErrWait). An instance Dial
// cannot reach is excluded and the Balancer picks again, until one is
// reached or none is left; when the error says until when it stays
// unreachable (conn.Pool's), the Balancer skips it until then.
type Connect struct {
	Balancer *Balancer
	Dial     func(discovery.Instance) (c *conn.Conn, ready <-chan struct{}, err error)
}

func (Connect) Name() string { return StageConnect }

// Route sets c.Conn.
func (s Connect) Route(c *Call) error {
	for {
		cn, ready, err := s.Dial(c.Instance())
		switch {
		case ready != nil:
			c.Wait = ready
			return ErrWait // and then Dial again
		case err == nil:
			c.Conn = cn
			return nil
		}
		var down interface{ RetryAt() time.Time }
		if errors.As(err, &down) {
			s.Balancer.Down(c.Instance(), down.RetryAt())
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
