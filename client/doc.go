// Package client is mesh's Go SDK for microservices: it calls services over
// TChannel (through the local meshd, or directly to a peer) and serves
// handlers that others call.
//
// A Client holds one persistent connection; any number of goroutines may call
// through it at once and answers return in whatever order they finish. The
// context's deadline becomes the call's TTL. Failures are typed: *Error carries
// the wire's error code (timeout, busy, declined, bad request, ...), and
// *ApplicationError is a handler's own failure answer.
//
// Two arg schemes are built in: raw (headers and body are opaque bytes) and
// JSON (headers are a string map, the body a JSON value), both interoperable
// with tchannel-go's raw and json packages.
//
// It knows nothing of Consul (nor links its client): through a meshd, where
// instances are and which one gets a call are meshd's business. Without
// one, DialPeers routes over the peers it is given with the same stages
// meshd runs (internal/routing), under the policies of package router.
package client
