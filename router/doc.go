// Package router routes every call that passes through a meshd.
//
// Its fast path is the relay: a call is forwarded frame by frame, reading
// only the frame header, the service name and the transport headers, and
// rewriting only the message id (and, on the first hop, adding the chosen
// instance's id as a routing header). arg2 and arg3 are never decoded, so a
// fragmented 100 MiB call costs the relay no more memory than one frame.
//
// A call without a routing header is resolved through discovery/ and sent to
// a picked instance: straight down the app's own connection when the
// instance is on this host, else to the instance's meshd over a pooled
// connection with the instance id in the "mesh-instance" header. A call with
// that header is delivered to the named local instance.
//
// The order of decisions for one call, in OfferCall: is it for the meshd
// itself → which instance (routing header, or discovery + balancer) → which
// connection → forward. Policies (retries, breakers, rate limits) come as
// stages in that order.
package router
