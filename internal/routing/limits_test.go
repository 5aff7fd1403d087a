package routing

import (
	"context"
	"fmt"
	"testing"

	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/testkit"

	"github.com/meshrpc/mesh/router"
)

// max_concurrent=2 holds across 20 policy updates while 2 calls are in
// flight: updates of other services, of the same policy again, and of
// another field of this service keep the count; the calls admitted before
// release into the same count after.
func TestLimitsCarryOverPolicyUpdates(t *testing.T) {
	reg := discovery.NewLocal()
	reg.Register(context.Background(), discovery.Instance{Service: "svc", ID: "svc-1", Addr: "self:1"})
	base := router.Policies{"svc": {MaxConcurrent: 2}}
	b, err := NewBalancer(base, testkit.Quiet)
	if err != nil {
		t.Fatal(err)
	}
	p := Pipeline{Discover{From: reg}, b, Admission{Balancer: b, Self: "self:1"}}
	admit := func() (*Call, error) {
		c := new(Call)
		c.Reset("svc", nil)
		return c, p.Route(c)
	}
	var held []*Call
	for range 2 {
		c, err := admit()
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	for i := range 20 {
		var next router.Policies
		switch i % 4 {
		case 0:
			next = router.Policies{"svc": {MaxConcurrent: 2}, fmt.Sprint("other-", i): {RateLimit: 10}}
		case 1:
			next = base
		case 2:
			next = router.Policies{"svc": {MaxConcurrent: 2, RateLimit: 1e6, Burst: 100}}
		case 3:
			next = router.Policies{"svc": {MaxConcurrent: 2, MaxAttempts: 1 + i%3}, "*": {TryTimeout: router.Duration(i + 1)}}
		}
		if err := b.SetPolicies(next); err != nil {
			t.Fatal(err)
		}
		if c, err := admit(); err == nil || frame.CodeOf(err) != frame.ErrCodeBusy {
			c.Release()
			t.Fatalf("update %d: a third call was admitted with 2 in flight (err %v)", i+1, err)
		}
	}
	held[0].Release()
	held[0].Release() // a second release gives back nothing more
	c, err := admit()
	if err != nil {
		t.Fatalf("a call was refused after one of the two finished: %v", err)
	}
	if _, err := admit(); err == nil {
		t.Fatal("a double release made room for a fourth call")
	}
	c.Release()
	held[1].Release()
}

// A rate limiter keeps its tokens when the policy changes: a burst spent
// before an update is not refilled by it.
func TestRateLimitKeepsItsTokensAcrossUpdates(t *testing.T) {
	b, _ := NewBalancer(router.Policies{"svc": {RateLimit: 0.001, Burst: 3}}, testkit.Quiet)
	reg := discovery.NewLocal()
	reg.Register(context.Background(), discovery.Instance{Service: "svc", ID: "svc-1", Addr: "self:1"})
	p := Pipeline{Discover{From: reg}, b, Admission{Balancer: b, Self: "self:1"}}
	admitted := 0
	for i := range 10 {
		if i == 5 {
			b.SetPolicies(router.Policies{"svc": {RateLimit: 0.001, Burst: 3}, "other": {MaxAttempts: 2}})
			b.SetPolicies(router.Policies{"svc": {RateLimit: 0.002, Burst: 3}})
		}
		var c Call
		c.Reset("svc", nil)
		if p.Route(&c) == nil {
			admitted++
			c.Release()
		}
	}
	if admitted != 3 {
		t.Fatalf("%d calls admitted with a burst of 3 and policy updates in between, want 3", admitted)
	}
}
