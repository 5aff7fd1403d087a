package relay

import (
	"testing"
	"unsafe"
)

// A relayed call is one allocation; past 1,024 bytes it moves up a size
// class (1,152), which measurably slows two-hop calls (docs/PERFORMANCE.md).
func TestRelayedCallFitsItsSizeClass(t *testing.T) {
	if n := unsafe.Sizeof(relayed{}); n > 1024 {
		t.Fatalf("relayed is %d bytes, over 1,024", n)
	}
}
