package client

import (
	"testing"

	"github.com/meshrpc/mesh/frame"
)

func TestJSONHeadersForms(t *testing.T) {
	for _, in := range []string{"", "null", " {} "} {
		h, err := decodeJSONHeaders([]byte(in))
		if err != nil || len(h) != 0 {
			t.Errorf("%q: %v %v", in, h, err)
		}
	}
	h, err := decodeJSONHeaders([]byte(`{"k":"v","$tracing$uber-trace-id":"1:2:0:1"}`))
	if err != nil || len(h) != 1 || h["k"] != "v" {
		t.Fatalf("tracing headers not dropped: %v %v", h, err)
	}
	if _, err := decodeJSONHeaders([]byte(`{"k":1}`)); frame.CodeOf(err) != 0x06 {
		t.Fatalf("non-string header: %v", err)
	}
}
