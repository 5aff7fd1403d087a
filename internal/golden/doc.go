// Package golden counts every call that enters the mesh once, on the edge
// it took: who called (the proven caller identity), which service, which
// method, and how it ended (one result label for answers and for refusals,
// by the stage that refused). From these two families PromQL, meshd's
// dashboard and meshctl compute the golden figures of an edge or a
// service: calls per second, success rate and latency percentiles.
//
// A call is counted by the meshd its caller is connected to, which is the
// one that proves the caller and routes the call; the meshd that delivers
// it on another host does not count it again, so sums over the mesh do not
// double count hops.
//
// Every label is capped (Caps): past a cap, new values are counted under
// Other, so callers inventing names cannot grow the series.
package golden
