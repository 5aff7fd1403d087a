package heapfloor

import (
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

func TestPercent(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		live, roots, floor uint64
		base, want         int
	}{
		{live: 4 * mib, floor: 64 * mib, base: 100, want: 1500},                 // 4 MiB × 16 = 64 MiB
		{live: 3 * mib, roots: 1 * mib, floor: 64 * mib, base: 100, want: 1525}, // 3 + 4 × 15.25
		{live: 32 * mib, floor: 64 * mib, base: 100, want: 100},                 // doubling reaches the floor anyway
		{live: 16 * mib, floor: 64 * mib, base: 100, want: 300},                 // 16 × 4
		{live: 200 * mib, floor: 64 * mib, base: 100, want: 100},                // past the floor: the runtime's own
		{live: 20 * mib, floor: 64 * mib, base: 400, want: 400},                 // a higher base is kept
		{live: 1024, floor: 64 * mib, base: 100, want: 1600},                    // the runtime's 4 MiB minimum × 16
		{live: 0, floor: 64 * mib, base: 100, want: 1600},
		{live: 1024, floor: 1 << 40, base: 100, want: MaxPercent},
		{live: 4 * mib, floor: 0, base: 100, want: 100},
	} {
		if got := Percent(tc.live, tc.roots, tc.floor, tc.base); got != tc.want {
			t.Errorf("Percent(%d, %d, %d, %d) = %d, want %d", tc.live, tc.roots, tc.floor, tc.base, got, tc.want)
		}
	}
}

// With a small live heap, Start raises the GC percent after collections,
// and stop puts the runtime's back.
func TestStartRaisesAndStopRestores(t *testing.T) {
	before := debug.SetGCPercent(100)
	defer debug.SetGCPercent(before)
	stop := Start(256 << 20)
	deadline := time.Now().Add(5 * time.Second)
	var now int
	for time.Now().Before(deadline) {
		runtime.GC()
		time.Sleep(10 * time.Millisecond) // the finalizer runs after the collection
		if now = Current(); now > 100 {
			break
		}
	}
	if now <= 100 {
		t.Fatalf("the GC percent stayed %d with a floor of 256 MiB", now)
	}
	stop()
	runtime.GC()
	time.Sleep(10 * time.Millisecond)
	if p := Current(); p != 100 {
		t.Fatalf("after stop the GC percent is %d, want 100", p)
	}
}
