package router

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Policy is how the mesh treats calls to one service. The zero value of a
// field means "inherit": from the "*" policy, else the built-in default.
type Policy struct {
	// MaxAttempts bounds the attempts of one call (1 disables retries).
	MaxAttempts int `json:"max_attempts,omitempty" yaml:"max_attempts"`
	// TryTimeout bounds one attempt: the instance gets at most this much of
	// the call's deadline, and a timed-out attempt may be retried ("re: t").
	TryTimeout Duration `json:"try_timeout,omitempty" yaml:"try_timeout"`
	// RateLimit is calls per second to the service's instances on one meshd
	// (answered Busy beyond it), with Burst calls of slack.
	RateLimit float64 `json:"rate_limit,omitempty" yaml:"rate_limit"`
	Burst     int     `json:"burst,omitempty" yaml:"burst"`
	// CallerRateLimit is calls per second one caller (the "cn" header) may
	// send to the service through its meshd.
	CallerRateLimit float64 `json:"caller_rate_limit,omitempty" yaml:"caller_rate_limit"`
	// MaxConcurrent bounds the calls in flight to the service's instances on
	// one meshd (answered Busy beyond it).
	MaxConcurrent int `json:"max_concurrent,omitempty" yaml:"max_concurrent"`
	// Blocked callers are refused at once (the kill switch); "*" blocks all.
	Blocked []string `json:"blocked,omitempty" yaml:"blocked"`
	// Balancer is "p2c-peak-ewma" (the default) or "round-robin". Calls with
	// a shard key always use rendezvous hashing.
	Balancer string `json:"balancer,omitempty" yaml:"balancer"`
	// RetryBudget is the share of recent calls that may be retries (default 0.2).
	RetryBudget float64 `json:"retry_budget,omitempty" yaml:"retry_budget"`
	// BreakerFailures consecutive failures open an instance's breaker
	// (default 5); so does a failure ratio of BreakerRatio (default 0.5) over
	// at least 20 calls. BreakerOpenFor is how long it stays open before
	// probing (default 5s; applies to instances first seen after a change).
	BreakerFailures int      `json:"breaker_failures,omitempty" yaml:"breaker_failures"`
	BreakerRatio    float64  `json:"breaker_ratio,omitempty" yaml:"breaker_ratio"`
	BreakerOpenFor  Duration `json:"breaker_open_for,omitempty" yaml:"breaker_open_for"`
}

// Balancer names.
const (
	BalancerP2C        = "p2c-peak-ewma"
	BalancerRoundRobin = "round-robin"
)

// Validate rejects settings that cannot be meant.
func (p Policy) Validate() error {
	switch {
	case p.MaxAttempts < 0 || p.MaxAttempts > 10:
		return fmt.Errorf("max_attempts %d: want 1 to 10 (0 inherits)", p.MaxAttempts)
	case p.RateLimit < 0 || p.CallerRateLimit < 0:
		return errors.New("rate limits cannot be negative")
	case p.Burst < 0 || p.MaxConcurrent < 0:
		return errors.New("burst and max_concurrent cannot be negative")
	case p.TryTimeout < 0 || p.BreakerOpenFor < 0:
		return errors.New("durations cannot be negative")
	case p.Balancer != "" && p.Balancer != BalancerP2C && p.Balancer != BalancerRoundRobin:
		return fmt.Errorf("balancer %q: want %q or %q", p.Balancer, BalancerP2C, BalancerRoundRobin)
	case p.RetryBudget < 0 || p.RetryBudget > 1:
		return fmt.Errorf("retry_budget %g: want a share between 0 and 1", p.RetryBudget)
	case p.BreakerFailures < 0 || p.BreakerRatio < 0 || p.BreakerRatio > 1:
		return errors.New("breaker_failures cannot be negative and breaker_ratio is a share between 0 and 1")
	}
	for _, c := range p.Blocked {
		if c == "" {
			return errors.New("blocked lists an empty caller name")
		}
	}
	return nil
}

// ParsePolicy decodes and validates one service's policy from JSON, as
// stored in Consul KV; unknown fields are errors, so typos do not pass.
func ParsePolicy(b []byte) (Policy, error) {
	var p Policy
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return Policy{}, fmt.Errorf("policy is not valid JSON of the policy fields: %w", err)
	}
	return p, p.Validate()
}

// merged fills p's zero fields from base. A rate limit and its burst go
// together: a policy that sets no rate takes the base's burst with it.
func (p Policy) merged(base Policy) Policy {
	if p.RateLimit == 0 {
		p.Burst = base.Burst
	}
	p.MaxAttempts = or(p.MaxAttempts, base.MaxAttempts)
	p.TryTimeout = or(p.TryTimeout, base.TryTimeout)
	p.RateLimit = or(p.RateLimit, base.RateLimit)
	p.Burst = or(p.Burst, base.Burst)
	p.CallerRateLimit = or(p.CallerRateLimit, base.CallerRateLimit)
	p.MaxConcurrent = or(p.MaxConcurrent, base.MaxConcurrent)
	p.Balancer = or(p.Balancer, base.Balancer)
	p.RetryBudget = or(p.RetryBudget, base.RetryBudget)
	p.BreakerFailures = or(p.BreakerFailures, base.BreakerFailures)
	p.BreakerRatio = or(p.BreakerRatio, base.BreakerRatio)
	p.BreakerOpenFor = or(p.BreakerOpenFor, base.BreakerOpenFor)
	if p.Blocked == nil {
		p.Blocked = base.Blocked
	}
	return p
}

// or is v, or fallback when v is the zero value.
func or[T comparable](v, fallback T) T {
	var zero T
	if v == zero {
		return fallback
	}
	return v
}

// withDefaults fills what is still unset with the built-in defaults.
func (p Policy) withDefaults() Policy {
	return p.merged(Policy{
		MaxAttempts:     maxAttempts,
		Balancer:        BalancerP2C,
		RetryBudget:     budgetRatio,
		BreakerFailures: breakerConsecutive,
		BreakerRatio:    0.5,
		BreakerOpenFor:  Duration(breakerOpenFor),
	})
}

// Policies are every service's policies, by service name; "*" applies to
// services without their own.
type Policies map[string]Policy

// Validate checks each policy, naming the one that fails.
func (ps Policies) Validate() error {
	for s, p := range ps {
		if err := p.Validate(); err != nil {
			return fmt.Errorf("policy of %q: %w", s, err)
		}
	}
	return nil
}

// equal reports whether p and q are the same policy.
func (p Policy) equal(q Policy) bool { return reflect.DeepEqual(p, q) }

// of is the policy of service: its own over the "*" policy.
func (ps Policies) of(service string) Policy { return ps[service].merged(ps["*"]) }

// limits is the live state of one service's policy on this meshd. When the
// policy changes, the new limits take over the old ones' state: calls in
// flight (the counter is shared, so calls admitted before the change
// release into it), the rate limiter's tokens, and per-caller limiters
// while the caller rate stays.
type limits struct {
	policy   Policy
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

// newLimits returns the live limits of policy p, taking over prev's state
// (nil: a service seen for the first time).
func newLimits(p Policy, prev *limits) *limits {
	l := &limits{policy: p.withDefaults(), inflight: new(atomic.Int64)}
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
	policies Policies
	live     sync.Map // service → *limits
}

// set replaces the policies. Only services whose policy changed get new
// limits, and those take over the old ones' state (newLimits): an update
// of one service, or a repeat of the same policies, disturbs no other.
func (s *policyStore) set(ps Policies) error {
	if err := ps.Validate(); err != nil {
		return err
	}
	ps = maps.Clone(ps)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.policies = ps
	s.live.Range(func(k, v any) bool {
		service, old := k.(string), v.(*limits)
		if p := ps.of(service); !p.withDefaults().equal(old.policy) {
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
	l := newLimits(s.policies.of(service), nil)
	s.live.Store(service, l)
	return l
}

// Duration is a time.Duration written as "250ms" in JSON and YAML.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("durations are strings like \"250ms\": %w", err)
	}
	v, err := time.ParseDuration(s)
	*d = Duration(v)
	return err
}

func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	*d = Duration(v)
	return err
}
