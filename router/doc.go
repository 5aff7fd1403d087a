// Package router holds the routing policy of a service's calls: how many
// attempts a call gets and how long each may take, which balancer picks an
// instance, when an instance's circuit breaker opens, what share of calls
// may be retries, the rate and concurrency limits, and which callers are
// refused outright (the kill switch).
//
// A Policy's zero fields inherit: a service's own policy, over the "*"
// policy, over Defaults (Policies.For). Policies are read from meshd's YAML
// file (policies:), from Consul KV (mesh/policies/SERVICE, one JSON Policy
// each, ParsePolicy) and from client.Options.Policies for the SDK's direct
// mode. The engine that applies them to every call is internal; this
// package is what users write.
package router
