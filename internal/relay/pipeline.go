package relay

import (
	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/conn"
	"github.com/meshrpc/mesh/internal/routing"
)

// The names of the relay's own stages and checks, as explanations, spans
// and metrics show them (routing's are routing.Stage*).
const (
	StageCheck     = "check"      // the prologue's edge check (edge.go)
	StageConnLimit = "conn_limit" // the prologue's connection limits (limits.go)
	StageDrain     = "drain"      // drain.go
	StageDeliver   = "deliver"    // deliver.go
)

// entryCheck is one check of the prologue: it reads the first frame and the
// connection it came on, which stages do not see. A refusal is recorded
// under its name, as a stage's is.
type entryCheck struct {
	name  string
	check func(r *Relay, from *conn.Conn, rc *relayed, req *frame.CallReq, frag *frame.Fragment) error
}

// pipelines declares the stages of every call through this meshd, in
// order. Adding a stage is one file and one line here.
//
// Before any of them, a call for meshd's own services (hyperbahn, meshd) is
// not relayed but served by meshd (OfferCall). A call from an app then meets
// the prologue: the edge check (no routing header only meshds may set, a
// well-formed message) and the app connection's limits, which read the frame
// and the connection.
//
// A call from an app on this host takes the first hop: a draining meshd
// declines it; discovery finds the service's instances (a name that is no
// service is refused here, before any per-service state exists for it);
// intentions may deny the caller (its proven identity, source.go); the
// kill switch and the caller's limit may refuse it; then the Balancer's pick
// and a connection to the picked instance (its app's own connection, or its
// meshd's) decide where it goes, and admission applies the service's local
// limits when that instance is on this host.
//
// A call another meshd routed here is on its last hop: deliver, the
// discover variant that finds the named local instance, replaces
// discovery, pick and connect, and the intentions are asked again, here
// where the instance is. A retry picks again among the instances not
// yet tried.
func (r *Relay) pipelines() {
	connect := routing.Connect{Balancer: r.bal, Dial: r.reach}
	admission := routing.Admission{Balancer: r.bal, Self: r.cfg.Self}
	authorize := routing.Authorize{Allowed: r.cfg.Allowed}
	r.prologue = []entryCheck{
		{StageCheck, (*Relay).checkRequest},  // edge.go
		{StageConnLimit, (*Relay).admitCall}, // limits.go
	}
	r.firstHop = routing.Pipeline{
		draining{r},                            // drain.go
		routing.Discover{From: r.cfg.Registry}, // internal/routing/discover.go
		authorize,                              // internal/routing/authorize.go
		routing.KillSwitch{Balancer: r.bal},    // internal/routing/killswitch.go
		routing.CallerLimit{Balancer: r.bal},   // internal/routing/callerlimit.go
		r.bal,                                  // internal/routing/balancer.go
		connect,                                // internal/routing/connect.go, with reach (relay.go)
		admission,                              // internal/routing/admission.go
	}
	r.lastHop = routing.Pipeline{
		draining{r}, // drain.go
		deliver{r},  // deliver.go
		authorize,   // the destination's own decision
		admission,
	}
	r.retry = routing.Pipeline{
		routing.Discover{From: r.cfg.Registry},
		r.bal,
		connect,
	}
}
