package router

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
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
	// Zones is "on" (the default) or "off": while on, a meshd that knows its
	// zone sends calls to instances in its zone as long as that zone has the
	// capacity its callers need, and spills the rest over to other zones in
	// proportion to their spare capacity (docs/ROUTING.md).
	Zones string `json:"zones,omitempty" yaml:"zones"`
	// ZoneMinInstances: with fewer healthy instances than this in all zones
	// together, zones are ignored (default 6, as Envoy's min_cluster_size):
	// a small service's few instances are better spread over all callers.
	ZoneMinInstances int `json:"zone_min_instances,omitempty" yaml:"zone_min_instances"`
	// HedgeMethods are the methods safe to repeat ("*": all): a call to one
	// of them that has not been answered after the hedge delay is sent to a
	// second instance too, and the first answer wins (docs/ROUTING.md).
	// Empty: no call is hedged.
	HedgeMethods []string `json:"hedge_methods,omitempty" yaml:"hedge_methods"`
	// HedgeDelay is a fixed hedge delay; unset, the delay is the
	// HedgePercentile (default 0.95) of the service's observed latency.
	HedgeDelay      Duration `json:"hedge_delay,omitempty" yaml:"hedge_delay"`
	HedgePercentile float64  `json:"hedge_percentile,omitempty" yaml:"hedge_percentile"`
	// HedgeBudget is the share of calls that may be hedged (default 0.05,
	// with a floor for quiet services, as the retry budget's).
	HedgeBudget float64 `json:"hedge_budget,omitempty" yaml:"hedge_budget"`
}

// Balancer names.
const (
	BalancerP2C        = "p2c-peak-ewma"
	BalancerRoundRobin = "round-robin"
)

// The values of Policy.Zones.
const (
	ZonesOn  = "on"
	ZonesOff = "off"
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
	case p.Zones != "" && p.Zones != ZonesOn && p.Zones != ZonesOff:
		return fmt.Errorf("zones %q: want %q or %q", p.Zones, ZonesOn, ZonesOff)
	case p.ZoneMinInstances < 0:
		return errors.New("zone_min_instances cannot be negative")
	case p.HedgeDelay < 0:
		return errors.New("hedge_delay cannot be negative")
	case p.HedgePercentile < 0 || p.HedgePercentile >= 1:
		return fmt.Errorf("hedge_percentile %g: want a share between 0 and 1, e.g. 0.95", p.HedgePercentile)
	case p.HedgeBudget < 0 || p.HedgeBudget > 1:
		return fmt.Errorf("hedge_budget %g: want a share between 0 and 1", p.HedgeBudget)
	}
	for _, c := range p.Blocked {
		if c == "" {
			return errors.New("blocked lists an empty caller name")
		}
	}
	for _, m := range p.HedgeMethods {
		if m == "" {
			return errors.New("hedge_methods lists an empty method name")
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
	p.Zones = or(p.Zones, base.Zones)
	p.ZoneMinInstances = or(p.ZoneMinInstances, base.ZoneMinInstances)
	if p.HedgeMethods == nil {
		p.HedgeMethods = base.HedgeMethods
	}
	p.HedgeDelay = or(p.HedgeDelay, base.HedgeDelay)
	p.HedgePercentile = or(p.HedgePercentile, base.HedgePercentile)
	p.HedgeBudget = or(p.HedgeBudget, base.HedgeBudget)
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

// Defaults is the built-in policy every unset field falls back to: at most
// 3 attempts, retries within 20% of recent calls, P2C on peak-EWMA
// latency, and a breaker that opens after 5 consecutive failures (or half
// of at least 20 calls in 10s) for 5s; calls stay in their zone while it
// has the capacity, for services of at least 6 healthy instances. No rate
// or concurrency limit.
func Defaults() Policy {
	return Policy{
		MaxAttempts:     3,
		Balancer:        BalancerP2C,
		RetryBudget:     0.2,
		BreakerFailures: 5,
		BreakerRatio:    0.5,
		BreakerOpenFor:  Duration(5 * time.Second),

		Zones:            ZonesOn,
		ZoneMinInstances: 6,
		HedgePercentile:  0.95,
		HedgeBudget:      0.05,
	}
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

// For is the policy in force for service: its own, over the "*" policy,
// over Defaults.
func (ps Policies) For(service string) Policy {
	return ps[service].merged(ps["*"]).merged(Defaults())
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
