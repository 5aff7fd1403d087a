package client

import "fmt"

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
