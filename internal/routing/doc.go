// Package routing decides where each call goes: the routing stages and the
// Balancer that learns from every attempt. meshd's relay (internal/relay)
// and the SDK's direct mode (client.DialPeers) both route with it, under
// the policies of package router.
//
// A routing decision is a Stage: a value with a Name and one method,
// Route(*Call), run in order by a Pipeline over a Call that carries the
// call's transport headers, its proven caller and what each stage decided.
// The order is data: internal/relay/pipeline.go declares meshd's pipelines,
// client/direct.go the SDK's. The stages here, one file each:
//
//	Discover     discover.go     the service's healthy instances, a cached read
//	Authorize    authorize.go    intentions: may the proven caller call it
//	KillSwitch   killswitch.go   refuse callers the policy blocks
//	CallerLimit  callerlimit.go  hold each caller to the per-caller rate
//	Balancer     balancer.go     skip open breakers (all open: pick anyway),
//	                             then P2C on peak-EWMA cost, rendezvous
//	                             hashing on the shard key ("sk"), or round robin
//	Connect      connect.go      reach the pick; an unreachable one is
//	                             excluded and the Balancer asked again
//	Admission    admission.go    the service's rate and concurrency limits,
//	                             for an instance on this host
//
// Feedback goes through the pick: Balancer.Send starts an attempt and its
// Attempt.Done teaches the instance's latency average, breaker and counters
// (endpoint.go) the Outcome of one mapping (attempt.go); Balancer.MayRetry
// decides whether a failure may go to another instance under the call's
// "re" flags, the attempts and time left, and the service's retry budget
// (retry.go). Each service's policy in force has live limits (limits.go).
//
// It knows nothing of how instances were found (discovery/) and moves no
// frame: a Call's Conn is only what Connect hands on to the caller.
package routing
