// Package backoff is mesh's one way to wait before trying again something
// that failed (reaching Consul, dialing meshd, advertising): a wait that
// doubles from Min to Max and is spread by ±20%, so that a fleet of
// processes that lost the same thing at the same moment does not come back
// in lockstep. It knows nothing of what is retried.
package backoff
