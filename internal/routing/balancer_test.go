package routing

import (
	"fmt"
	"testing"
	"time"

	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/internal/testkit"
	"github.com/meshrpc/mesh/router"
)

func testEndpoints(n int) []*endpoint {
	b, _ := NewBalancer(nil, testkit.Quiet)
	eps := make([]*endpoint, n)
	for i := range eps {
		eps[i] = b.eps.get(discovery.Instance{Service: "s", ID: fmt.Sprintf("s-%d", i), Addr: "a:1"})
	}
	return eps
}

// bits is a bitset with the given indexes set.
func bits(is ...int) bitset {
	var s bitset
	for _, i := range is {
		s.set(i)
	}
	return s
}

func TestRendezvousAffinity(t *testing.T) {
	const keys = 10000
	eps := testEndpoints(5)
	owner := make([]int, keys)
	for k := range keys {
		owner[k] = pickRendezvous(eps, nil, []byte(fmt.Sprint("user-", k)), false)
		if again := pickRendezvous(eps, nil, []byte(fmt.Sprint("user-", k)), false); again != owner[k] {
			t.Fatalf("key %d moved from %d to %d with nothing changed", k, owner[k], again)
		}
	}
	// Take instance 2 away: only its keys move, spread over the others.
	moved, spread := 0, map[int]int{}
	for k := range keys {
		now := pickRendezvous(eps, bits(2), []byte(fmt.Sprint("user-", k)), false)
		if now != owner[k] {
			moved++
			spread[now]++
			if owner[k] != 2 {
				t.Fatalf("key %d moved off instance %d, which stayed", k, owner[k])
			}
		}
	}
	frac := float64(moved) / keys
	t.Logf("removing 1 of 5 instances moved %.1f%% of keys, to %v", 100*frac, spread)
	if frac > 0.25 || len(spread) != 4 {
		t.Fatalf("moved %.1f%% of keys to %d instances; want ≤ 25%% spread over 4", 100*frac, len(spread))
	}
	// Re-adding it moves them back: the same owners as before.
	for k := range keys {
		if now := pickRendezvous(eps, nil, []byte(fmt.Sprint("user-", k)), false); now != owner[k] {
			t.Fatalf("key %d did not move back", k)
		}
	}
}

// The load bound for 1M keys over 5 instances, stated in the test's output.
func TestRendezvousBalance(t *testing.T) {
	const keys = 1000000
	eps := testEndpoints(5)
	count := make([]int, len(eps))
	for k := range keys {
		count[pickRendezvous(eps, nil, []byte(fmt.Sprint("k", k)), false)]++
	}
	mean := float64(keys) / float64(len(eps))
	worst := 0.0
	for _, c := range count {
		worst = max(worst, float64(c)/mean)
	}
	t.Logf("1M keys over 5 instances: %v, max/mean %.4f", count, worst)
	if worst > 1.01 {
		t.Fatalf("max/mean %.4f exceeds 1.01", worst)
	}
}

// With one instance 10x slower, peak-EWMA power-of-two-choices sends it
// almost nothing once it has been measured.
func TestP2CAvoidsSlowInstance(t *testing.T) {
	eps := testEndpoints(3)
	latency := []time.Duration{time.Millisecond, time.Millisecond, 10 * time.Millisecond}
	now := time.Now()
	picks := make([]int, 3)
	for i := range 10000 {
		j, _ := pickP2C(eps, nil, false)
		if i >= 100 { // after a warm-up that measured everyone
			picks[j]++
		}
		now = now.Add(100 * time.Microsecond)
		eps[j].observe(latency[j], now)
	}
	share := float64(picks[2]) / float64(picks[0]+picks[1]+picks[2])
	t.Logf("picks %v: the slow instance got %.2f%%", picks, 100*share)
	if share > 0.10 {
		t.Fatalf("slow instance got %.1f%% of calls, want < 10%%", 100*share)
	}
	// Calls in flight count too: a busy fast instance loses to an idle one.
	eps[0].pending.Store(50)
	for range 100 {
		if j, _ := pickP2C(eps, nil, false); j == 0 {
			// only possible when the other pick was the slow one and it is costlier still
			if eps[0].cost() > eps[2].cost() {
				t.Fatal("picked the costlier instance")
			}
		}
	}
}

func TestOpenBreakerIsSkipped(t *testing.T) {
	eps := testEndpoints(3)
	for range router.Defaults().BreakerFailures {
		eps[1].breaker.Execute(broke)
	}
	if eps[1].usable() {
		t.Fatal("breaker still closed after consecutive failures")
	}
	for range 1000 {
		if j, _ := pickP2C(eps, nil, false); j == 1 || pickRendezvous(eps, nil, []byte("k"), false) == 1 {
			t.Fatal("picked an instance behind an open breaker")
		}
	}
	if j, _ := pickP2C(eps, bits(0, 2), false); j != -1 {
		t.Fatal("picked when every instance is excluded or open")
	}
	// Panic mode: with every breaker open, pick regardless.
	for _, e := range eps {
		for range router.Defaults().BreakerFailures {
			e.breaker.Execute(broke)
		}
	}
	if j, _ := pickP2C(eps, nil, true); j < 0 {
		t.Fatal("panic mode picked nothing")
	}
}

// BenchmarkPick is the balancing stage's cost per call: 0 allocations.
func BenchmarkPick(b *testing.B) {
	eps := testEndpoints(5)
	b.Run("p2c-peak-ewma", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if j, _ := pickP2C(eps, nil, false); j < 0 {
				b.Fatal("no pick")
			}
		}
	})
	key := []byte("user-12345")
	b.Run("rendezvous", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if pickRendezvous(eps, nil, key, false) < 0 {
				b.Fatal("no pick")
			}
		}
	})
	b.Run("feedback", func(b *testing.B) {
		b.ReportAllocs()
		now := time.Now()
		for b.Loop() {
			eps[0].pending.Add(1)
			eps[0].pending.Add(-1)
			eps[0].observe(time.Millisecond, now)
			eps[0].breaker.Execute(passed)
		}
	})
}
