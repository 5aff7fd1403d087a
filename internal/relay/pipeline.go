package relay

import "github.com/meshrpc/mesh/internal/routing"

// pipelines declares the stages of every call through this meshd, in
// order. Adding a stage is one file and one line here.
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
	r.firstHop = routing.Pipeline{
		draining{r},                            // drain.go
		routing.Discover{From: r.cfg.Registry}, // router/discover.go
		authorize,                              // router/authorize.go
		routing.KillSwitch{Balancer: r.bal},    // router/killswitch.go
		routing.CallerLimit{Balancer: r.bal},   // router/callerlimit.go
		r.bal,                                  // router/balancer.go
		connect,                                // router/connect.go, with reach (relay.go)
		admission,                              // router/admission.go
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
