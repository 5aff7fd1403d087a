// Package discovery knows where service instances are. A Registry takes the
// instances a meshd serves (Register, Deregister) and answers which healthy
// instances exist for a service anywhere in the mesh (Instances), from a
// cache that lookups on the call path read without touching the network.
//
// Two backends: Local (this package), an embedded registry for a single host
// with no Consul, optionally seeded with static remote instances; and
// discovery/consul, the distributed source of truth (TTL health checks,
// blocking-query watches, a stale cache while Consul is down).
//
// It knows nothing of frames or connections; internal/routing asks it, and picks.
package discovery
