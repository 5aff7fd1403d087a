// Package router routes every call that passes through a meshd.
//
// Its fast path is the relay: a call is forwarded frame by frame, reading
// only the frame header, the service name and the transport headers, and
// rewriting only the message id and ttl (and, on the first hop, adding the
// chosen instance's id as a routing header). arg2 and arg3 are never decoded,
// so a fragmented 100 MiB call costs the relay no more memory than one frame.
//
// Routing decisions are Stages: values with one method, Route(*Call), run in
// order by a Pipeline over a pooled Call that carries what each stage
// decided (policy, instances, the pick and why). The Balancer stage also
// keeps what every attempt teaches (latency, breakers, retry budgets), so
// the SDK's direct mode (client.DialPeers) routes with the same stages.
//
// The stages of one call, in the order OfferCall runs them:
//
//  1. own services: calls for meshd itself ("hyperbahn", "meshd") are served, not routed;
//  2. drain: a draining meshd declines;
//  3. policy (policy.go): the service's policy, from meshd's file and Consul KV,
//     looked up once per Call;
//  4. callerGate: kill switch and per-caller rate limit, at the caller's own meshd;
//  5. Discover: the service's healthy instances, a cached read;
//  6. Balancer (balancer.go, stages.go): breakers skip instances (all open: pick
//     anyway), then power of two choices on peak-EWMA cost, rendezvous hashing
//     on the shard key ("sk"), or round robin; an unreachable pick is excluded
//     and the Balancer asked again;
//  7. admission: per-service rate and concurrency limits when the instance is on
//     this host;
//  8. deadline: the ttl forwarded is the time left, capped by the per-attempt timeout;
//  9. forward, with a record of every decision (explain.go);
//  10. on the answer: the instance's endpoint learns latency and success (peak
//     EWMA, breaker, metrics.go); a safe failure is retried on another
//     instance within the deadline and the retry budget (retry.go).
//
// A call on a connection from another meshd (init header mesh_role: meshd) is
// on its last hop: steps 5-6 become "the instance its routing header names, or
// any local instance of the service", and it is never forwarded again.
//
// The router knows nothing of how instances were found (discovery/) or how
// frames are read and written (internal/conn/).
package router
