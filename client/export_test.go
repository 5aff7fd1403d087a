package client

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
)

// TracingFromHeaders shows tracingFromHeaders' answer in a word, for tests.
func TracingFromHeaders(arg2 []byte) string {
	t, ok := tracingFromHeaders(arg2)
	if !ok {
		return "none"
	}
	s := fmt.Sprintf("%x/%x", t.TraceID, t.SpanID)
	if t.Sampled() {
		s += " sampled"
	}
	return s
}

// HeaderParent exposes headerParent for tests.
var HeaderParent = headerParent

// DirectMetrics is what a DialPeers Client's Balancer learned, in the
// Prometheus text format meshd serves its own Balancer's in.
func DirectMetrics(c *Client) string {
	b, err := testutil.CollectAndFormat(c.direct.bal, expfmt.TypeTextPlain, "mesh_instance_attempts_total", "mesh_instance_attempts_in_flight")
	if err != nil {
		panic(err)
	}
	return string(b)
}
