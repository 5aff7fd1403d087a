package relay

import (
	"sync/atomic"
	"testing"
	"time"
)

// A call's timers come from a pool: whatever ends them (a stop before
// their time, their own firing, a firing that arms the next one), the
// call's slot never keeps a timer another call may have taken since.
func TestCallTimerSlots(t *testing.T) {
	r := new(Relay)
	tests := []struct {
		name  string
		fire  func(ct *callTimer, fired chan<- *callTimer)
		stop  bool // stop it before its time
		fires int  // how many timers fire
		left  bool // the slot holds a timer afterwards
	}{
		{name: "stopped before its time", stop: true, fires: 0},
		{name: "fires once", fires: 1},
		{name: "fires and arms the next", fires: 1, left: true, fire: func(ct *callTimer, fired chan<- *callTimer) {
			rc := ct.rc
			rc.mu.Lock()
			next := ct.r.newTimer(rc, &rc.tryTimer, func(ct *callTimer) { fired <- ct })
			next.start(time.Hour)
			rc.mu.Unlock()
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rc := new(relayed)
			fired := make(chan *callTimer, 4)
			var runs atomic.Int32
			rc.mu.Lock()
			ct := r.newTimer(rc, &rc.tryTimer, func(ct *callTimer) {
				runs.Add(1)
				if tc.fire != nil {
					tc.fire(ct, fired)
				}
				fired <- ct
			})
			d := time.Millisecond
			if tc.stop {
				d = time.Hour
			}
			ct.start(d)
			if tc.stop {
				stopTimer(&rc.tryTimer)
			}
			rc.mu.Unlock()
			for range tc.fires {
				select {
				case <-fired:
				case <-time.After(5 * time.Second):
					t.Fatal("a timer never fired")
				}
			}
			time.Sleep(20 * time.Millisecond) // a timer that should not fire has had its chance, and run its end
			select {
			case <-fired:
				t.Fatal("a timer fired more often than armed")
			default:
			}
			if tc.stop && runs.Load() != 0 {
				t.Fatal("a stopped timer fired")
			}
			rc.mu.Lock()
			defer rc.mu.Unlock()
			if left := rc.tryTimer != nil; left != tc.left {
				t.Fatalf("the slot holds a timer: %v, want %v", left, tc.left)
			}
			stopTimer(&rc.tryTimer)
		})
	}
}

// Arming and stopping a call's timer allocates nothing once the pool has
// timers: a relayed call arms one or two.
func TestCallTimerAllocations(t *testing.T) {
	r := new(Relay)
	rc := new(relayed)
	allocs := testing.AllocsPerRun(1000, func() {
		rc.mu.Lock()
		ct := r.newTimer(rc, &rc.timer, expired)
		ct.start(time.Hour)
		stopTimer(&rc.timer)
		rc.mu.Unlock()
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per armed and stopped timer, want 0", allocs)
	}
}
