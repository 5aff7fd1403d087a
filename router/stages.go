package router

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/frame"
)

// A Stage makes one routing decision for a call, reading what the stages
// before it decided and writing its own into c. An error stops the call;
// a *frame.Error says which wire error the caller hears.
//
// meshd runs policy gates, Discover, a Balancer and admission (see the
// package comment); the SDK's direct mode runs Discover and a Balancer over
// the peers it was given.
type Stage interface {
	Route(c *Call) error
}

// Pipeline runs stages in order until one refuses the call.
type Pipeline []Stage

// Route runs every stage on c.
func (p Pipeline) Route(c *Call) error {
	for _, s := range p {
		if err := s.Route(c); err != nil {
			return err
		}
	}
	return nil
}

// Call is one call as the stages see it. The caller fills the request's
// side; stages fill the rest. A Call is reused for the call's retries:
// Tried grows, and the stages run again.
type Call struct {
	Service  string
	Caller   []byte
	ShardKey []byte // the "sk" transport header; nil when absent
	Now      time.Time
	// Tried lists the instances this call was already sent to: they are
	// not picked again.
	Tried []string

	// Instances are the service's healthy instances (Discover).
	Instances []discovery.Instance
	// Picked is the index in Instances of the chosen one (Balancer).
	Picked int

	limits   *limits
	eps      []*endpoint
	epsBuf   [16]*endpoint
	excluded uint64 // instances found unreachable during this pick
	choice   choice
	tryBuf   [4]string
}

// Reset readies c for a new call, keeping its buffers.
func (c *Call) Reset(service string, caller, shardKey []byte) {
	*c = Call{Service: service, Caller: caller, ShardKey: shardKey, Now: time.Now(), Picked: -1}
	c.Tried = c.tryBuf[:0]
}

// Instance is the picked instance.
func (c *Call) Instance() discovery.Instance { return c.Instances[c.Picked] }

// Exclude takes the picked instance out of this pick (it was unreachable),
// so the Balancer can pick again.
func (c *Call) Exclude() {
	if c.Picked < 64 {
		c.excluded |= 1 << c.Picked
	}
	c.choice.unreachable++
}

func (c *Call) lim(b *Balancer) *limits {
	if c.limits == nil {
		c.limits = b.policies.limits(c.Service)
	}
	return c.limits
}

// Finder is what Discover needs of a registry.
type Finder interface {
	Instances(ctx context.Context, service string) ([]discovery.Instance, error)
}

// Discover is the stage that finds a service's healthy instances.
type Discover struct{ From Finder }

// Route sets c.Instances, or refuses the call when there are none.
func (d Discover) Route(c *Call) error {
	insts, err := d.From.Instances(context.Background(), c.Service)
	if err != nil || len(insts) == 0 {
		return frame.Errorf(frame.ErrCodeDeclined, "no healthy instances of service %q", c.Service)
	}
	c.Instances, c.eps, c.excluded, c.Picked = insts, nil, 0, -1
	return nil
}

// Balancer is the stage that picks an instance, and what it learns from
// every attempt: calls in flight and peak-EWMA latency per instance, a
// circuit breaker per instance, a round-robin turn and a retry budget per
// service, each service's policy. One Balancer serves every call of a
// process (meshd or an SDK client), concurrently.
type Balancer struct {
	log      *slog.Logger
	policies policyStore
	eps      endpoints
	rr       sync.Map // service → *atomic.Uint64
	budgets  sync.Map // service → *retryBudget
}

// NewBalancer returns a Balancer with per-service policies (nil: defaults).
func NewBalancer(ps Policies, log *slog.Logger) (*Balancer, error) {
	if log == nil {
		log = slog.Default()
	}
	b := &Balancer{log: log}
	b.eps.settings = b.breakerSettings
	if err := b.policies.set(ps); err != nil {
		b.policies.set(nil)
		return b, err
	}
	return b, nil
}

// SetPolicies replaces every service's policy; invalid ones are refused and
// the ones in force stay.
func (b *Balancer) SetPolicies(ps Policies) error { return b.policies.set(ps) }

// Policy is the policy in force for service.
func (b *Balancer) Policy(service string) Policy { return b.policies.limits(service).policy }

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
	excluded := c.excluded
	for i, inst := range insts {
		if i < 64 && slices.Contains(c.Tried, inst.ID) {
			excluded |= 1 << i
		}
	}
	ch := &c.choice
	ch.considered, ch.open = len(insts), 0
	for _, e := range c.eps {
		if !e.usable() {
			ch.open++
		}
	}
	// With every instance behind an open breaker, pick among them anyway
	// (panic mode): refusing everything would only delay recovery.
	all := ch.open == len(c.eps)
	ch.panic = all
	var i, rival int
	switch {
	case c.ShardKey != nil:
		i, rival, ch.how = pickRendezvous(c.eps, excluded, c.ShardKey, all), -1, byRendezvous
	case c.lim(b).policy.Balancer == BalancerRoundRobin:
		i, rival, ch.how = pickRoundRobin(c.eps, excluded, all, b.counter(c.Service).Add(1)), -1, byRoundRobin
	default:
		i, rival = pickP2C(c.eps, excluded, all)
		ch.how = byP2C
	}
	c.Picked = i
	if i < 0 {
		why := fmt.Sprintf("none of the %d instances of service %q is reachable", len(insts), c.Service)
		if ch.open > 0 {
			why += fmt.Sprintf(" (%d behind open circuit breakers)", ch.open)
		}
		return &frame.Error{Code: frame.ErrCodeDeclined, Message: why}
	}
	ch.rival, ch.cost = nil, c.eps[i].cost()
	if rival >= 0 {
		ch.rival, ch.rivalCost = c.eps[rival], c.eps[rival].cost()
	}
	return nil
}

// Sent tells the Balancer an attempt went to the picked instance: it is in
// flight there, and it counts toward the service's retry budget.
func (b *Balancer) Sent(c *Call) {
	c.eps[c.Picked].pending.Add(1)
	b.budget(c.Service).deposit()
	c.Tried = append(c.Tried, c.Instance().ID)
}

// Done tells the Balancer how the attempt sent at start ended: code 0 for an
// answer (an application error included), else the wire error. The
// instance's latency average, breaker and counters learn from it.
func (b *Balancer) Done(c *Call, start time.Time, code frame.ErrCode) {
	o := outcome{judged: true}
	if code != 0 {
		o = errored(code)
	}
	c.eps[c.Picked].judge(start, o)
}

// MayRetry reports whether an attempt that failed with code may be sent to
// another instance: the code is safe to retry under the call's "re" flags
// (retryFlags), attempts are left under the policy, and the service's retry
// budget has room. A true answer takes a retry from the budget.
func (b *Balancer) MayRetry(c *Call, code frame.ErrCode, re []byte) bool {
	if !parseRetryValue(re).allows(code) || len(c.Tried) >= c.lim(b).policy.MaxAttempts {
		return false
	}
	return b.withdrawRetry(c.Service)
}

// withdrawRetry takes one retry from service's budget, if it has room.
func (b *Balancer) withdrawRetry(service string) bool {
	return b.budget(service).withdraw(b.policies.limits(service).policy.RetryBudget)
}

// Backoff is how long to wait before retry number n (1 for the first) with
// left until the deadline: exponential from 1ms, capped at 25ms and at a
// quarter of the time left, with full jitter so retries do not align.
func Backoff(n int, left time.Duration) time.Duration {
	b := min(backoffCap, backoffBase<<n)
	return min(time.Duration(rand.Int64N(int64(b)+1)), left/4)
}

// Explain says in words why the picked instance was chosen.
func (c *Call) Explain() string {
	rec := record{n: 1}
	rec.attempts[0].choice = c.choice
	return string(rec.appendWhy(nil, 0, false))
}

func (b *Balancer) counter(service string) *atomic.Uint64 {
	if v, ok := b.rr.Load(service); ok {
		return v.(*atomic.Uint64)
	}
	v, _ := b.rr.LoadOrStore(service, new(atomic.Uint64))
	return v.(*atomic.Uint64)
}

func (b *Balancer) budget(service string) *retryBudget {
	if v, ok := b.budgets.Load(service); ok {
		return v.(*retryBudget)
	}
	v, _ := b.budgets.LoadOrStore(service, &retryBudget{last: time.Now()})
	return v.(*retryBudget)
}
