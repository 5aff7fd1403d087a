package routing

import (
	"fmt"
	"maps"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/meshrpc/mesh/router"
)

// limits is the live state of one service's policy on this meshd. When the
// policy changes, the new limits take over the old ones' state: calls in
// flight (the counter is shared, so calls admitted before the change
// release into it), the rate limiter's tokens, and per-caller limiters
// while the caller rate stays.
type limits struct {
	policy   router.Policy
	rate     *rate.Limiter // nil: unlimited
	inflight *atomic.Int64
	callers  *callerLimits
}

// maxCallers bounds the callers a service keeps a rate limiter for: caller
// names are the callers' own words, so a flood of made-up ones shares one.
const maxCallers = 10000

// callerLimits are a service's rate limiters per caller.
type callerLimits struct {
	mu sync.RWMutex
	m  map[string]*rate.Limiter
}

// newLimits returns the live limits of policy p (in force: see
// router.Policies.For), taking over prev's state
// (nil: a service seen for the first time).
func newLimits(p router.Policy, prev *limits) *limits {
	l := &limits{policy: p, inflight: new(atomic.Int64)}
	if prev != nil {
		l.inflight = prev.inflight
	}
	if p.RateLimit > 0 {
		limit, burst := rate.Limit(p.RateLimit), max(p.Burst, 1)
		if prev != nil && prev.rate != nil {
			prev.rate.SetLimit(limit) // keeps the tokens it has: no fresh burst
			prev.rate.SetBurst(burst)
			l.rate = prev.rate
		} else {
			l.rate = rate.NewLimiter(limit, burst)
		}
	}
	if prev != nil && prev.policy.CallerRateLimit == l.policy.CallerRateLimit {
		l.callers = prev.callers
	} else {
		l.callers = &callerLimits{m: make(map[string]*rate.Limiter)}
	}
	return l
}

// blocked reports whether the kill switch refuses caller.
func (l *limits) blocked(caller []byte) bool {
	for _, b := range l.policy.Blocked {
		if b == "*" || b == string(caller) {
			return true
		}
	}
	return false
}

// callerAllowed applies the per-caller rate limit.
func (l *limits) callerAllowed(caller []byte, now time.Time) bool {
	if l.policy.CallerRateLimit <= 0 {
		return true
	}
	cl := l.callers
	cl.mu.RLock()
	lim := cl.m[string(caller)]
	cl.mu.RUnlock()
	if lim == nil {
		cl.mu.Lock()
		if lim = cl.m[string(caller)]; lim == nil {
			key := string(caller)
			if len(cl.m) >= maxCallers {
				key = "" // past the bound, new callers share one limiter
			}
			if lim = cl.m[key]; lim == nil {
				burst := max(int(l.policy.CallerRateLimit/5), 1) // 200ms of calls
				lim = rate.NewLimiter(rate.Limit(l.policy.CallerRateLimit), burst)
				cl.m[key] = lim
			}
		}
		cl.mu.Unlock()
	}
	return lim.AllowN(now, 1)
}

// admit applies the service's rate and concurrency limits to a call about
// to be delivered to a local instance; release must follow an admission.
func (l *limits) admit(now time.Time) (ok bool, why string) {
	if l.rate != nil && !l.rate.AllowN(now, 1) {
		return false, fmt.Sprintf("rate limit of %g calls/s reached", l.policy.RateLimit)
	}
	if n := l.inflight.Add(1); l.policy.MaxConcurrent > 0 && n > int64(l.policy.MaxConcurrent) {
		l.inflight.Add(-1)
		return false, fmt.Sprintf("%d calls in flight, the limit is %d", n-1, l.policy.MaxConcurrent)
	}
	return true, ""
}

func (l *limits) release() { l.inflight.Add(-1) }

// policyStore holds the policies and each service's live limits.
type policyStore struct {
	mu       sync.Mutex // serializes set and the creation of limits
	policies router.Policies
	live     sync.Map // service → *limits
}

// set replaces the policies. Only services whose policy changed get new
// limits, and those take over the old ones' state (newLimits): an update
// of one service, or a repeat of the same policies, disturbs no other.
func (s *policyStore) set(ps router.Policies) error {
	if err := ps.Validate(); err != nil {
		return err
	}
	ps = maps.Clone(ps)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.policies = ps
	s.live.Range(func(k, v any) bool {
		service, old := k.(string), v.(*limits)
		if p := ps.For(service); !reflect.DeepEqual(p, old.policy) {
			s.live.Store(service, newLimits(p, old))
		}
		return true
	})
	return nil
}

// limits returns the live limits of service.
func (s *policyStore) limits(service string) *limits {
	if v, ok := s.live.Load(service); ok {
		return v.(*limits)
	}
	s.mu.Lock() // so a concurrent set cannot be missed
	defer s.mu.Unlock()
	if v, ok := s.live.Load(service); ok {
		return v.(*limits)
	}
	l := newLimits(s.policies.For(service), nil)
	s.live.Store(service, l)
	return l
}
