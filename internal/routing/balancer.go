package routing

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/golden"
	"github.com/meshrpc/mesh/router"
)

// Balancer is the stage that picks an instance, and what it learns from
// every attempt: calls in flight and peak-EWMA latency per instance, a
// circuit breaker per instance, a round-robin turn and a retry budget per
// service, each service's policy. One Balancer serves every call of a
// process (meshd or an SDK client), concurrently.
//
// Feedback goes through the pick itself: Send starts an attempt at the
// picked instance and returns it, and the Attempt's Done says how it ended
// (as grpc-go's PickResult.Done does); MayRetry decides whether a failed
// attempt may go to another instance.
type Balancer struct {
	log      *slog.Logger
	policies policyStore
	eps      endpoints
	rr       sync.Map                 // service → *atomic.Uint64
	services sync.Map                 // service → *serviceState
	zones    atomic.Pointer[zoneView] // this meshd's zone and the callers' (zone.go); nil: none known

	caps          golden.Caps        // of its metric series (metrics.go)
	overflow      func(label string) // told of each instance or service counted under golden.Other
	serviceSeries atomic.Int64       // services with a label of their own
}

// NewBalancer returns a Balancer with per-service policies (nil: defaults).
func NewBalancer(ps router.Policies, log *slog.Logger) (*Balancer, error) {
	if log == nil {
		log = slog.Default()
	}
	b := &Balancer{log: log, caps: golden.Caps{}.WithDefaults()}
	b.eps.settings = b.breakerSettings
	b.eps.service = b.service
	b.eps.maxSeries = int64(b.caps.Instances)
	if err := b.policies.set(ps); err != nil {
		b.policies.set(nil)
		return b, err
	}
	return b, nil
}

// SetPolicies replaces every service's policy; invalid ones are refused and
// the ones in force stay. Services whose policy is unchanged keep their live
// limits; changed ones carry their calls in flight over.
func (b *Balancer) SetPolicies(ps router.Policies) error { return b.policies.set(ps) }

// TryTimeout bounds one attempt of c (Policy.TryTimeout; 0: none), from the
// policy c already looked up.
func (b *Balancer) TryTimeout(c *Call) time.Duration { return c.lim(b).policy.TryTimeout.D() }

func (*Balancer) Name() string { return StageBalance }

// Route picks one of c.Instances not tried before: instances behind open
// breakers are skipped while others exist (all open: pick among them all);
// then rendezvous hashing on the shard key, round robin, or power of two
// choices on peak-EWMA cost, as the service's policy says.
func (b *Balancer) Route(c *Call) error {
	insts := c.Instances
	if c.eps == nil || len(c.eps) != len(insts) {
		c.eps = c.epsBuf[:0]
		for _, inst := range insts {
			c.eps = append(c.eps, b.eps.get(inst))
		}
	}
	now := c.Now().UnixNano()
	for _, e := range c.eps {
		e.seen(now)
	}
	c.skip = append(c.skip[:0], c.unreachable...)
	for i, inst := range insts {
		if slices.Contains(c.Tried, inst.ID) {
			c.skip.set(i)
		}
	}
	ch := &c.choice
	open, down := 0, 0
	for _, e := range c.eps {
		switch {
		case !e.reachable():
			down++
		case !e.usable():
			open++
		}
	}
	ch.considered, ch.open, ch.down = int32(len(insts)), count16(open), count16(down)
	// With every instance behind an open breaker or known unreachable, pick
	// among them anyway (panic mode): refusing everything would only delay
	// recovery.
	all := open+down == len(c.eps)
	ch.panic = all
	ch.zones, ch.zone = nil, zoneNone
	key := c.ShardKey() // a scan of the transport headers: once per pick
	switch {
	case key != nil:
		ch.zones, ch.zone = b.zones.Load(), zoneShardKey
	case !all:
		b.keepInZone(c, &c.lim(b).policy)
	default: // none usable anywhere, home included
		ch.zones, ch.zone = b.zones.Load(), zoneHomeDown
	}
	var i, rival int
	switch {
	case key != nil:
		i, rival, ch.how = pickRendezvous(c.eps, c.skip, key, all), -1, byRendezvous
	case c.lim(b).policy.Balancer == router.BalancerRoundRobin:
		i, rival, ch.how = pickRoundRobin(c.eps, c.skip, all, b.Turn(c.Service)), -1, byRoundRobin
	default:
		i, rival = pickP2C(c.eps, c.skip, all)
		ch.how = byP2C
	}
	c.Picked = int32(i)
	if i < 0 {
		why := fmt.Sprintf("none of the %d instances of service %q is reachable", len(insts), c.Service)
		if open > 0 {
			why += fmt.Sprintf(" (%d behind open circuit breakers)", open)
		}
		if down > 0 {
			why += fmt.Sprintf(" (%d known unreachable)", down)
		}
		return &frame.Error{Code: frame.ErrCodeDeclined, Message: why}
	}
	ch.picked, ch.rival, ch.cost = c.eps[i], nil, float32(c.eps[i].cost())
	if rival >= 0 {
		ch.rival, ch.rivalCost = c.eps[rival], float32(c.eps[rival].cost())
	}
	return nil
}

// Turn is the next round-robin turn of service: the Balancer's own, and a
// caller's that takes turns among instances the Balancer does not pick (a
// last hop's local instances).
func (b *Balancer) Turn(service string) uint64 {
	if v, ok := b.rr.Load(service); ok {
		return v.(*atomic.Uint64).Add(1)
	}
	v, _ := b.rr.LoadOrStore(service, new(atomic.Uint64))
	return v.(*atomic.Uint64).Add(1)
}

// ok reports whether candidate i may be picked: not skipped (tried, or
// found unreachable during this call) and, unless all is set, neither
// behind an open breaker nor known unreachable.
func ok(eps []*endpoint, skip bitset, i int, all bool) bool {
	return !skip.has(i) && (all || eps[i].usable() && eps[i].reachable())
}

// Down tells the Balancer that inst cannot be reached until until (its
// meshd's last dial failed, and the pool tries again then): picks skip it
// meanwhile, while another instance is usable.
func (b *Balancer) Down(inst discovery.Instance, until time.Time) {
	b.eps.get(inst).downUntil.Store(until.UnixNano())
}

// pickP2C chooses between two random usable candidates the one with the
// lower cost (power of two choices), and returns the other as rival (-1 if
// there was none). It returns -1 if none is usable.
func pickP2C(eps []*endpoint, skip bitset, all bool) (pick, rival int) {
	a := randomUsable(eps, skip, -1, all)
	if a < 0 {
		return -1, -1
	}
	b := randomUsable(eps, skip, a, all)
	if b < 0 || eps[a].cost() <= eps[b].cost() {
		return a, b
	}
	return b, a
}

// randomUsable returns a random usable index other than not, or -1.
func randomUsable(eps []*endpoint, skip bitset, not int, all bool) int {
	n := len(eps)
	start := rand.IntN(n)
	for i := range n {
		j := (start + i) % n
		if j != not && ok(eps, skip, j, all) {
			return j
		}
	}
	return -1
}

// pickRoundRobin chooses the n-th usable candidate in turn: counted among
// the usable ones only, so a skipped one's turns do not all fall to its
// neighbour.
func pickRoundRobin(eps []*endpoint, skip bitset, all bool, n uint64) int {
	usable := 0
	for i := range eps {
		if ok(eps, skip, i, all) {
			usable++
		}
	}
	if usable == 0 {
		return -1
	}
	k := int(n % uint64(usable))
	for i := range eps {
		if ok(eps, skip, i, all) {
			if k == 0 {
				return i
			}
			k--
		}
	}
	return -1
}

// pickRendezvous chooses, for a shard key, the usable candidate with the
// highest hash of (key, instance): the same key reaches the same instance
// while it is usable; when one of N instances leaves only the keys it had
// (about 1/N) move, spread evenly over the others, and they move back when
// it returns. Every meshd computes the same choice.
func pickRendezvous(eps []*endpoint, skip bitset, key []byte, all bool) int {
	k := hashBytes(key)
	best, bestScore := -1, uint64(0)
	for i, e := range eps {
		if !ok(eps, skip, i, all) {
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

// Policy is the policy in force for service.
func (b *Balancer) Policy(service string) router.Policy { return b.policies.limits(service).policy }
