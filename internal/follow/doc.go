// Package follow is mesh's one way to follow Consul: a loop of blocking
// queries (Consul's long polls) that hands each new answer on, retries
// failures with backoff, and ends the moment its context does, even in the
// middle of a wait of minutes. Service health (discovery/consul), the
// connect CA (internal/trust), intentions (internal/intentions) and
// policies in KV (internal/meshd) all follow Consul through it.
//
// It knows what Consul's documentation asks of a blocking-query client (the
// index rules below), not what is queried.
package follow
