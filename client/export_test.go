package client

import (
	"fmt"
	"strings"
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
	var b strings.Builder
	c.direct.bal.WriteMetrics(&b)
	return b.String()
}
