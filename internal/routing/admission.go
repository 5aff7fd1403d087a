package routing

import "github.com/meshrpc/mesh/frame"

// Admission is the stage of calls delivered to an instance on this host
// (one whose address is Self): the service's rate and concurrency limits
// here (Policy.RateLimit, Burst, MaxConcurrent). An admitted call holds a
// place until Call.Release; calls that go to another host pass untouched,
// since that host's meshd admits them.
type Admission struct {
	Balancer *Balancer
	Self     string
}

func (Admission) Name() string { return StageAdmission }

func (a Admission) Route(c *Call) error {
	if c.admitted != nil || c.Instance().Addr != a.Self {
		return nil
	}
	lim := c.lim(a.Balancer)
	if ok, why := lim.admit(c.Now()); !ok {
		return frame.Errorf(frame.ErrCodeBusy, "service %q on this host: %s", c.Service, why)
	}
	c.admitted = lim
	return nil
}
