package backoff

import (
	"testing"
	"time"
)

func TestWaitsDoubleToMaxAndReset(t *testing.T) {
	b := Backoff{Min: 100 * time.Millisecond, Max: time.Second}
	for i, want := range []time.Duration{100, 200, 400, 800, 1000, 1000} {
		want *= time.Millisecond
		if got := b.Next(); got < want*8/10 || got > want*12/10 {
			t.Fatalf("wait %d: %v, want %v ±20%%", i, got, want)
		}
	}
	b.Reset()
	if got := b.Next(); got > 120*time.Millisecond {
		t.Fatalf("after Reset: %v, want about Min", got)
	}
}

func TestJitterSpreads(t *testing.T) {
	seen := map[time.Duration]bool{}
	for range 100 {
		d := Jitter(time.Second)
		if d < 800*time.Millisecond || d > 1200*time.Millisecond {
			t.Fatalf("Jitter(1s) = %v, outside ±20%%", d)
		}
		seen[d] = true
	}
	if len(seen) < 50 {
		t.Fatalf("100 jittered waits took only %d values", len(seen))
	}
}

func TestWaitStops(t *testing.T) {
	stop := make(chan struct{})
	close(stop)
	b := Backoff{Min: time.Hour, Max: time.Hour}
	if b.Wait(stop) {
		t.Fatal("Wait passed an hour with stop closed")
	}
	b = Backoff{Min: time.Millisecond, Max: time.Millisecond}
	if !b.Wait(make(chan struct{})) {
		t.Fatal("Wait of 1ms did not pass")
	}
}
