package routing

import (
	"testing"
	"time"

	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/router"
)

// Every duration falls in a bucket whose top is at most 25% above it (4
// buckets per power of two), and the buckets are in order.
func TestLatencyBuckets(t *testing.T) {
	for _, d := range []time.Duration{0, time.Microsecond, 3 * time.Microsecond, 100 * time.Microsecond, 1234 * time.Microsecond,
		50 * time.Millisecond, 200 * time.Millisecond, 3 * time.Second} {
		i := latencyBucket(d)
		top := bucketTop(i)
		if top < d || float64(top) > 1.25*float64(max(d, time.Microsecond))+float64(time.Microsecond) {
			t.Errorf("%v: bucket %d tops at %v", d, i, top)
		}
		if i > 0 && bucketTop(i-1) >= top {
			t.Errorf("bucket %d's top %v is not above bucket %d's %v", i, top, i-1, bucketTop(i-1))
		}
	}
}

// The learned delay is the percentile of the answers seen, once there are
// enough; it follows a change as old answers fade.
func TestLearnedHedgeDelay(t *testing.T) {
	var l latencies
	now := time.Now().UnixNano()
	for range hedgeMinSamples - 1 {
		l.observe(time.Millisecond)
	}
	if d := l.percentile(0.95, now); d != 0 {
		t.Fatalf("with %d answers the delay is %v, want none yet", hedgeMinSamples-1, d)
	}
	for i := range 1000 {
		l.observe(time.Duration(1+i%100) * time.Millisecond) // 1..100 ms, evenly
	}
	now += int64(hedgeRecompute)
	if d := l.percentile(0.95, now); d < 90*time.Millisecond || d > 120*time.Millisecond {
		t.Fatalf("p95 of 1..100 ms is %v", d)
	}
	if d := l.percentile(0.5, now+1); d < 90*time.Millisecond {
		t.Fatalf("read again within %v: %v, want the last reading", hedgeRecompute, d)
	}
	for range 20 * hedgeKeep { // the service got fast: the old answers fade
		l.observe(2 * time.Millisecond)
		if l.buckets[latencyBucket(2*time.Millisecond)].Load()%5000 == 0 {
			now += int64(hedgeRecompute)
			l.percentile(0.95, now)
		}
	}
	now += int64(hedgeRecompute)
	if d := l.percentile(0.95, now); d > 3*time.Millisecond {
		t.Fatalf("after the service got fast the delay is %v", d)
	}
}

func hedgeCall(b *Balancer, method string, h frame.Headers) *Call {
	c := new(Call)
	c.Reset("svc", h)
	c.Method = method
	c.Instances = []discovery.Instance{{Service: "svc", ID: "a", Addr: "10.0.0.1:1"}, {Service: "svc", ID: "b", Addr: "10.0.0.2:1"}}
	return c
}

// A call is hedged only for a method its policy lists, with a second
// attempt allowed, no shard key and no "re: n"; the delay is the fixed one.
func TestHedgeAfter(t *testing.T) {
	fixed := router.Policy{HedgeMethods: []string{"get"}, HedgeDelay: router.Duration(15 * time.Millisecond)}
	for _, tc := range []struct {
		name   string
		policy router.Policy
		method string
		h      frame.Headers
		want   time.Duration
	}{
		{"listed method", fixed, "get", nil, 15 * time.Millisecond},
		{"other method", fixed, "put", nil, 0},
		{"any method", router.Policy{HedgeMethods: []string{"*"}, HedgeDelay: router.Duration(time.Millisecond)}, "put", nil, time.Millisecond},
		{"no hedge_methods", router.Policy{HedgeDelay: router.Duration(time.Millisecond)}, "get", nil, 0},
		{"caller says never repeat", fixed, "get", frame.AppendHeader(nil, frame.HeaderRetryFlags, "n"), 0},
		{"shard key", fixed, "get", frame.AppendHeader(nil, frame.HeaderShardKey, "k"), 0},
		{"one attempt only", router.Policy{HedgeMethods: []string{"get"}, HedgeDelay: router.Duration(time.Millisecond), MaxAttempts: 1}, "get", nil, 0},
		{"learned, no answers yet", router.Policy{HedgeMethods: []string{"get"}}, "get", nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := NewBalancer(router.Policies{"svc": tc.policy}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := b.HedgeAfter(hedgeCall(b, tc.method, tc.h)); got != tc.want {
				t.Fatalf("HedgeAfter = %v, want %v", got, tc.want)
			}
		})
	}
}

// A service under pressure is not hedged: a Busy answer within the last
// second, or an open breaker among its instances; past that, the budget
// decides.
func TestMayHedgeUnderPressure(t *testing.T) {
	b, _ := NewBalancer(router.Policies{"svc": {HedgeMethods: []string{"*"}, HedgeDelay: router.Duration(time.Millisecond)}}, nil)
	c := hedgeCall(b, "get", nil)
	if err := b.Route(c); err != nil {
		t.Fatal(err)
	}
	b.Send(c).Done(Failed(frame.ErrCodeBusy))
	if b.MayHedge(c, time.Second) {
		t.Fatal("hedged right after a Busy answer")
	}
	b.service("svc").lastBusy.Store(time.Now().Add(-2 * busyMemory).UnixNano())
	if !b.MayHedge(c, time.Second) {
		t.Fatal("not hedged once the Busy answer is old")
	}
	c.choice.open = 1
	if b.MayHedge(c, time.Second) {
		t.Fatal("hedged with an open breaker among the instances")
	}
	c.choice.open = 0
	granted := 1
	for b.MayHedge(c, time.Second) {
		granted++
	}
	st := b.service("svc")
	if granted != budgetFloor || st.hedges[hedgeRefusedPressure].Load() != 2 || st.hedges[hedgeRefusedBudget].Load() != 1 {
		t.Fatalf("granted %d hedges of a quiet service (want the floor, %v); refused for pressure %d, budget %d",
			granted, budgetFloor, st.hedges[hedgeRefusedPressure].Load(), st.hedges[hedgeRefusedBudget].Load())
	}
}
