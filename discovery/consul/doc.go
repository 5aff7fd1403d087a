// Package consul is the discovery.Registry backed by a Consul agent, the
// mesh's distributed source of truth: register.go registers this meshd's
// instances with TTL health checks and renews them; watch.go follows the
// health of the datacenter with one blocking query and caches each looked-up
// service's passing instances, kept (stale) while Consul is unreachable.
//
// It is its own package so that what does not use Consul (the SDK, the
// embedded registry) does not link its client.
package consul
