package heapfloor

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// MaxPercent bounds the GC percent the floor sets: with almost nothing
// live, collections still come before the heap is a hundred times that.
const MaxPercent = 10_000

// Start keeps the heap's goal at floor bytes or more until stop is called,
// which restores the GC percent in force before. base is the percent kept
// once the live heap needs no floor (the runtime's, normally 100).
func Start(floor uint64) (stop func()) {
	base := Current()
	if base < 0 { // GOGC=off: nothing to raise
		return func() {}
	}
	t := &tuner{floor: floor, base: base, set: base}
	t.sample = []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/gc/scan/stack:bytes"}, {Name: "/gc/scan/globals:bytes"}}
	t.tune()
	t.arm()
	return func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		t.stopped = true
		debug.SetGCPercent(t.base)
	}
}

type tuner struct {
	floor  uint64
	base   int
	sample []metrics.Sample

	mu      sync.Mutex
	set     int // the percent set last
	stopped bool
}

// sentinel is garbage made on purpose: its finalizer runs after the
// collection that found it, and arms the next.
type sentinel struct{ _ [16]byte }

func (t *tuner) arm() {
	runtime.SetFinalizer(&sentinel{}, func(*sentinel) {
		t.mu.Lock()
		stopped := t.stopped
		t.mu.Unlock()
		if !stopped {
			t.tune()
			t.arm()
		}
	})
}

// tune sets the percent for the heap live after the last collection; it
// leaves it when the change is under a tenth, as setting it costs a lock
// of the runtime's heap.
func (t *tuner) tune() {
	metrics.Read(t.sample)
	for _, s := range t.sample {
		if s.Value.Kind() != metrics.KindUint64 {
			return
		}
	}
	roots := t.sample[1].Value.Uint64() + t.sample[2].Value.Uint64()
	p := Percent(t.sample[0].Value.Uint64(), roots, t.floor, t.base)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped || (p*10 >= t.set*9 && p*10 <= t.set*11) {
		return
	}
	t.set = p
	debug.SetGCPercent(p)
}

// heapMinimum is the runtime's least heap goal at a GC percent of 100;
// it scales with the percent, so a percent past floor/heapMinimum*100
// would let the heap grow past the floor before any collection.
const heapMinimum = 4 << 20

// Percent is the GC percent whose heap goal is the floor for a heap of
// live bytes, when the collector also scans roots bytes of stacks and
// globals (the runtime's goal: live + (live+roots)*percent/100); never
// under base, nor over what makes the runtime's minimum goal pass the
// floor, nor over MaxPercent.
func Percent(live, roots, floor uint64, base int) int {
	if live >= floor {
		return base
	}
	p := uint64(MaxPercent)
	if live+roots > 0 {
		p = (floor - live) * 100 / (live + roots)
	}
	p = min(p, floor*100/heapMinimum, MaxPercent)
	return max(base, int(p))
}

// Current is the GC percent in force (-1: collection is off).
func Current() int {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 100
	}
	p := s[0].Value.Uint64()
	if p > MaxPercent*1000 { // off reads as the largest value
		return -1
	}
	return int(p)
}
