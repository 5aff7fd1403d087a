package router

import (
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/meshrpc/mesh/discovery"
)

// peakEWMADecay is the time constant of the latency average: an observation
// loses half its weight in about 0.7s. A latency above the average replaces
// it at once (the "peak"), so a slowing instance is avoided within one call,
// while a one-off stall of a fast instance is forgotten in well under a
// second instead of sending traffic to a slow one meanwhile.
const peakEWMADecay = time.Second

// endpoint is what the router learns about one instance from the calls it
// sends there: calls in flight, a peak-sensitive latency average, and a
// circuit breaker.
type endpoint struct {
	id      string
	hash    uint64 // of the id, for rendezvous hashing
	pending atomic.Int64
	breaker *gobreaker.CircuitBreaker[struct{}]
	service string
	addr    string // of the meshd that delivers to it
	stats   endpointStats

	mu    sync.Mutex
	ewma  float64 // nanoseconds
	stamp time.Time
}

// cost is the expected wait at this instance: latency times queue length.
// The latency decays toward zero while the instance gets no calls, so one
// that was avoided is tried again once it has been left alone a while.
func (e *endpoint) cost() float64 {
	e.mu.Lock()
	l := e.ewma
	if !e.stamp.IsZero() {
		l *= math.Exp(-float64(time.Since(e.stamp)) / float64(peakEWMADecay))
	}
	e.mu.Unlock()
	return (l + 1000) * float64(e.pending.Load()+1)
}

// observe folds one call's latency into the average.
func (e *endpoint) observe(rtt time.Duration, now time.Time) {
	x := float64(rtt)
	e.mu.Lock()
	if x > e.ewma || e.stamp.IsZero() {
		e.ewma = x
	} else {
		w := math.Exp(-float64(now.Sub(e.stamp)) / float64(peakEWMADecay))
		e.ewma = e.ewma*w + x*(1-w)
	}
	e.stamp = now
	e.mu.Unlock()
}

// usable reports whether the breaker lets calls through: not while open,
// and while half-open only as many at once as it takes probes.
func (e *endpoint) usable() bool {
	switch e.breaker.State() {
	case gobreaker.StateOpen:
		return false
	case gobreaker.StateHalfOpen:
		return e.pending.Load() < breakerProbes
	}
	return true
}

// ok reports whether candidate i may be picked: not excluded by the caller
// (found unreachable during this call; only the first 64 can be) and, unless
// all is set, not behind an open breaker.
func ok(eps []*endpoint, excluded uint64, i int, all bool) bool {
	return (i >= 64 || excluded&(1<<i) == 0) && (all || eps[i].usable())
}

// pickP2C chooses between two random usable candidates the one with the
// lower cost (power of two choices), and returns the other as rival (-1 if
// there was none). It returns -1 if none is usable.
func pickP2C(eps []*endpoint, excluded uint64, all bool) (pick, rival int) {
	a := randomUsable(eps, excluded, -1, all)
	if a < 0 {
		return -1, -1
	}
	b := randomUsable(eps, excluded, a, all)
	if b < 0 || eps[a].cost() <= eps[b].cost() {
		return a, b
	}
	return b, a
}

// randomUsable returns a random usable index other than not, or -1.
func randomUsable(eps []*endpoint, excluded uint64, not int, all bool) int {
	n := len(eps)
	start := rand.IntN(n)
	for i := range n {
		j := (start + i) % n
		if j != not && ok(eps, excluded, j, all) {
			return j
		}
	}
	return -1
}

// pickRoundRobin chooses the n-th usable candidate in turn.
func pickRoundRobin(eps []*endpoint, excluded uint64, all bool, n uint64) int {
	for i := range len(eps) {
		j := int((n + uint64(i)) % uint64(len(eps)))
		if ok(eps, excluded, j, all) {
			return j
		}
	}
	return -1
}

// pickRendezvous chooses, for a shard key, the usable candidate with the
// highest hash of (key, instance): the same key reaches the same instance
// while it is usable; when one of N instances leaves only the keys it had
// (about 1/N) move, spread evenly over the others, and they move back when
// it returns. Every meshd computes the same choice.
func pickRendezvous(eps []*endpoint, excluded uint64, key []byte, all bool) int {
	k := hashBytes(key)
	best, bestScore := -1, uint64(0)
	for i, e := range eps {
		if !ok(eps, excluded, i, all) {
			continue
		}
		if s := mix64(k ^ e.hash); best < 0 || s > bestScore {
			best, bestScore = i, s
		}
	}
	return best
}

// hashBytes is FNV-1a: deterministic across processes, unlike maphash.
func hashBytes(b []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range b {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return mix64(h)
}

// mix64 is the splitmix64 finalizer: every input bit affects every output bit.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// endpoints keeps an endpoint per instance id.
type endpoints struct {
	m        sync.Map // id → *endpoint
	settings func(e *endpoint) gobreaker.Settings
}

func (s *endpoints) get(inst discovery.Instance) *endpoint {
	if v, ok := s.m.Load(inst.ID); ok {
		return v.(*endpoint)
	}
	e := &endpoint{id: inst.ID, service: inst.Service, addr: inst.Addr, hash: hashBytes([]byte(inst.ID))}
	e.breaker = gobreaker.NewCircuitBreaker[struct{}](s.settings(e))
	v, _ := s.m.LoadOrStore(inst.ID, e)
	return v.(*endpoint)
}

// Breaker defaults: a run of 5 failures, or half of at least 20 calls in a
// 10s window, opens an instance's breaker; after 5s up to 3 probe calls
// decide whether it closes again.
const (
	breakerConsecutive = 5
	breakerMinCalls    = 20
	breakerWindow      = 10 * time.Second
	breakerOpenFor     = 5 * time.Second
	breakerProbes      = 3
)

func (b *Balancer) breakerSettings(e *endpoint) gobreaker.Settings {
	return gobreaker.Settings{
		Name:        e.id,
		MaxRequests: breakerProbes,
		Interval:    breakerWindow,
		Timeout:     b.policies.limits(e.service).policy.BreakerOpenFor.D(),
		ReadyToTrip: func(c gobreaker.Counts) bool {
			p := b.policies.limits(e.service).policy // thresholds follow policy changes
			return c.ConsecutiveFailures >= uint32(p.BreakerFailures) ||
				c.Requests >= breakerMinCalls && float64(c.TotalFailures) >= p.BreakerRatio*float64(c.Requests)
		},
		OnStateChange: func(name string, from, to gobreaker.State) {
			e.stats.breakerChanges[to].Add(1)
			b.log.Info("circuit breaker changed", "instance", name, "from", from.String(), "to", to.String())
		},
	}
}
