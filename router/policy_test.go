package router

import (
	"strings"
	"testing"
	"time"
)

func TestParsePolicy(t *testing.T) {
	cases := []struct {
		in   string
		want string // error substring; "" for valid
	}{
		{`{"max_attempts": 2, "rate_limit": 50, "burst": 5, "blocked": ["bad-caller"], "try_timeout": "150ms"}`, ""},
		{`{"try_timeout": "soon"}`, "invalid duration"},
		{`{"balancer": "round-robin", "retry_budget": 0.1, "breaker_failures": 3, "breaker_ratio": 0.3, "breaker_open_for": "2s"}`, ""},
		{`{"balancer": "random"}`, "balancer"},
		{`{"retry_budget": 1.5}`, "retry_budget"},
		{`{"breaker_ratio": 2}`, "breaker_ratio"},
		{`{"try_timeout": 5}`, "durations are strings"},
		{`{}`, ""},
		{`{"hedge_methods": ["get", "list"], "hedge_delay": "15ms", "hedge_budget": 0.1, "zones": "off", "zone_min_instances": 3}`, ""},
		{`{"hedge_methods": ["*"], "hedge_percentile": 0.99}`, ""},
		{`{"hedge_percentile": 1}`, "hedge_percentile"},
		{`{"hedge_budget": -0.1}`, "hedge_budget"},
		{`{"hedge_methods": [""]}`, "hedge_methods"},
		{`{"zones": "maybe"}`, "zones"},
		{`{"zone_min_instances": -1}`, "zone_min_instances"},
		{`{"max_atempts": 2}`, "unknown field"},
		{`{"rate_limit": -1}`, "negative"},
		{`{"max_attempts": 11}`, "max_attempts"},
		{`{"blocked": [""]}`, "empty caller"},
		{`not json`, "not valid JSON"},
	}
	for _, tc := range cases {
		_, err := ParsePolicy([]byte(tc.in))
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: error %v, want %q", tc.in, err, tc.want)
		}
	}
}

// A service's policy in force is its own, over "*", over the defaults; a
// policy that sets no rate takes the burst of the one it inherits the rate
// from.
func TestPoliciesFor(t *testing.T) {
	ps := Policies{
		"*":  {MaxAttempts: 2, RateLimit: 100, Burst: 20, Blocked: []string{"rogue"}},
		"kv": {MaxAttempts: 1, TryTimeout: Duration(50 * time.Millisecond), Burst: 5},
		"rl": {RateLimit: 10, Burst: 3, Blocked: []string{}},
	}
	d := Defaults()
	for _, tc := range []struct {
		service string
		check   func(Policy) bool
	}{
		{"kv", func(p Policy) bool {
			return p.MaxAttempts == 1 && p.TryTimeout.D() == 50*time.Millisecond && p.RateLimit == 100 && p.Burst == 20 && p.Blocked[0] == "rogue"
		}},
		{"rl", func(p Policy) bool {
			return p.MaxAttempts == 2 && p.RateLimit == 10 && p.Burst == 3 && len(p.Blocked) == 0
		}},
		{"other", func(p Policy) bool {
			return p.MaxAttempts == 2 && p.Balancer == d.Balancer && p.BreakerFailures == d.BreakerFailures && p.BreakerOpenFor == d.BreakerOpenFor
		}},
	} {
		if p := ps.For(tc.service); !tc.check(p) {
			t.Errorf("policy of %s in force: %+v", tc.service, p)
		}
	}
	if p := (Policies{}).For("x"); p.MaxAttempts != 3 || p.RetryBudget != 0.2 || p.BreakerFailures != 5 || p.BreakerRatio != 0.5 || p.BreakerOpenFor.D() != 5*time.Second {
		t.Errorf("no policies: %+v, want the documented defaults", p)
	}
}
