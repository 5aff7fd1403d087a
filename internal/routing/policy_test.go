package routing

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/internal/testkit"
	"github.com/meshrpc/mesh/router"
)

func TestPoliciesInheritAndReplace(t *testing.T) {
	var s policyStore
	if err := s.set(router.Policies{"*": {MaxAttempts: 2, MaxConcurrent: 7}, "kv": {MaxAttempts: 1}}); err != nil {
		t.Fatal(err)
	}
	if p := s.limits("kv").policy; p.MaxAttempts != 1 || p.MaxConcurrent != 7 {
		t.Fatalf("kv policy = %+v, want its own max_attempts and the default's max_concurrent", p)
	}
	if p := s.limits("other").policy; p.MaxAttempts != 2 {
		t.Fatalf("other policy = %+v", p)
	}
	// An invalid set is refused and the one in force stays.
	if err := s.set(router.Policies{"kv": {RateLimit: -5}}); err == nil || !strings.Contains(err.Error(), `"kv"`) {
		t.Fatalf("invalid policies: %v", err)
	}
	if p := s.limits("kv").policy; p.MaxAttempts != 1 {
		t.Fatalf("after a refused update kv policy = %+v", p)
	}
}

// A caller limited to 100 calls/s that offers 1,000/s gets 100/s (±10%);
// another caller is unaffected.
func TestCallerRateLimitHolds(t *testing.T) {
	l := newLimits(router.Policy{CallerRateLimit: 100}, nil)
	start := time.Now()
	allowedA, allowedB := 0, 0
	for ms := range 5000 { // 5 s at one call per ms from each caller
		now := start.Add(time.Duration(ms) * time.Millisecond)
		if l.callerAllowed([]byte("greedy"), now) {
			allowedA++
		}
		if ms%20 == 0 && l.callerAllowed([]byte("modest"), now) { // 50/s
			allowedB++
		}
	}
	rateA := float64(allowedA) / 5
	t.Logf("greedy caller: %.0f calls/s admitted of 1000/s offered; modest caller: %d of 250", rateA, allowedB)
	if rateA < 90 || rateA > 110 {
		t.Fatalf("greedy caller got %.0f calls/s, want 100 ±10%%", rateA)
	}
	if allowedB != 250 {
		t.Fatalf("modest caller got %d of 250 calls", allowedB)
	}
}

func TestConcurrencyLimitAndKillSwitch(t *testing.T) {
	l := newLimits(router.Policy{MaxConcurrent: 2, Blocked: []string{"rogue"}}, nil)
	now := time.Now()
	if ok, _ := l.admit(now); !ok {
		t.Fatal("first call refused")
	}
	if ok, _ := l.admit(now); !ok {
		t.Fatal("second call refused")
	}
	if ok, why := l.admit(now); ok || !strings.Contains(why, "limit is 2") {
		t.Fatalf("third concurrent call: %v %q", ok, why)
	}
	l.release()
	if ok, _ := l.admit(now); !ok {
		t.Fatal("call refused after one finished")
	}
	if !l.blocked([]byte("rogue")) || l.blocked([]byte("friend")) {
		t.Fatal("kill switch blocks the wrong callers")
	}
	if !newLimits(router.Policy{Blocked: []string{"*"}}, nil).blocked([]byte("anyone")) {
		t.Fatal(`"*" does not block everyone`)
	}
}

// A pick's explanation says how it was made, against whom, and what was
// left out.
func TestChoiceWhy(t *testing.T) {
	eps := testEndpoints(2)
	for _, tc := range []struct {
		ch    Choice
		terse bool
		want  string
	}{
		{Choice{how: byP2C, considered: 2, rival: eps[1], cost: 2000, rivalCost: 9000}, false,
			"power of two choices: expected wait 2.0µs (peak-EWMA latency × calls in flight) beat s-1 at 9.0µs (2 instances)"},
		{Choice{how: byP2C, considered: 2, rival: eps[1], cost: 2000, rivalCost: 9000}, true,
			"power of two choices: expected wait 2.0µs beat s-1 at 9.0µs (2 instances)"},
		{Choice{how: byP2C, considered: 1, cost: 1500}, false,
			"power of two choices: expected wait 1.5µs (peak-EWMA latency × calls in flight), the only usable instance (1 instance)"},
		{Choice{how: byP2C, considered: 2, rival: eps[1], cost: 97_790_000, rivalCost: 2_500_000_000}, true, // in the unit a person reads
			"power of two choices: expected wait 97.8ms beat s-1 at 2.5s (2 instances)"},
		{Choice{how: byRendezvous, considered: 3, open: 1, unreachable: 1}, false,
			"shard key: the highest rendezvous hash (3 instances, 1 behind open breakers, 1 unreachable)"},
		{Choice{how: byRoundRobin, considered: 2, open: 2, panic: true}, false,
			"round robin (2 instances, 2 behind open breakers; all breakers open, so picked regardless)"},
	} {
		if got := string(tc.ch.AppendWhy(nil, tc.terse)); got != tc.want {
			t.Errorf("got  %q\nwant %q", got, tc.want)
		}
	}
}

func TestRoundRobinTakesTurns(t *testing.T) {
	eps := testEndpoints(3)
	var got []int
	for n := range uint64(6) {
		got = append(got, pickRoundRobin(eps, nil, false, n))
	}
	if fmt.Sprint(got) != "[0 1 2 0 1 2]" {
		t.Fatalf("round robin picked %v", got)
	}
	if j := pickRoundRobin(eps, bits(1), false, 1); j != 2 {
		t.Fatalf("round robin did not skip an excluded instance: %d", j)
	}
	// With one skipped, the others take turns evenly: its turns do not all
	// fall to its neighbour.
	got = got[:0]
	for n := range uint64(6) {
		got = append(got, pickRoundRobin(testEndpoints(4), bits(0), false, n))
	}
	if fmt.Sprint(got) != "[1 2 3 1 2 3]" {
		t.Fatalf("round robin around a skipped instance picked %v", got)
	}
}

func TestBreakerThresholdsFollowPolicy(t *testing.T) {
	b, _ := NewBalancer(router.Policies{"s": {BreakerFailures: 2}}, testkit.Quiet)
	e := b.eps.get(discovery.Instance{Service: "s", ID: "s-1", Addr: "a:1"})
	e.breaker.Execute(broke)
	if !e.usable() {
		t.Fatal("open after 1 failure")
	}
	e.breaker.Execute(broke)
	if e.usable() {
		t.Fatal("still closed after the policy's 2 consecutive failures")
	}
}
