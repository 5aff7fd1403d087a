package routing

import (
	"bytes"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/golden"
)

// Retries are limited to the policy's share of recent calls (counts that
// fade with a 10s time constant; 20% by default), or to a floor of 10 for a
// service so quiet that the share would be less. A full outage thus cannot
// multiply the load on a service, while a quiet one can still retry. A retry
// needs minTimeForRetry left before the call's deadline.
const (
	budgetFloor     = 10.0
	budgetMemory    = 10 * time.Second
	backoffBase     = time.Millisecond
	backoffCap      = 25 * time.Millisecond
	minTimeForRetry = 2 * time.Millisecond
)

// retryFlags is the "re" transport header: c = connection errors (the
// default), t = timeouts, n = never.
type retryFlags struct{ never, conn, timeout bool }

// parseRetryValue reads the "re" header's value; empty means "c".
func parseRetryValue(v []byte) retryFlags {
	if len(v) == 0 {
		return retryFlags{conn: true}
	}
	return retryFlags{
		never:   bytes.IndexByte(v, 'n') >= 0,
		conn:    bytes.IndexByte(v, 'c') >= 0,
		timeout: bytes.IndexByte(v, 't') >= 0,
	}
}

// allows reports whether an attempt that failed with code may be tried on
// another instance. Busy and declined mean the instance did not start the
// call, so they are always safe; a lost connection needs "c"; a timeout "t".
func (f retryFlags) allows(code frame.ErrCode) bool {
	if f.never {
		return false
	}
	switch code {
	case frame.ErrCodeBusy, frame.ErrCodeDeclined:
		return true
	case frame.ErrCodeNetwork:
		return f.conn
	case frame.ErrCodeTimeout:
		return f.timeout
	}
	return false
}

// CanRetry reports whether any failure of c could be retried: its "re"
// flags are not "n" and its policy allows more than one attempt. A relay
// keeps a copy of the request only for such calls.
func (b *Balancer) CanRetry(c *Call) bool {
	return !c.re.never && c.lim(b).policy.MaxAttempts > 1
}

// MayRetry reports whether an attempt that failed with code may be sent to
// another instance with left until the call's deadline: the code is safe to
// retry under the call's "re" flags, attempts are left under the policy,
// there is time for one, and the service's retry budget has room. A true
// answer takes a retry from the budget.
func (b *Balancer) MayRetry(c *Call, code frame.ErrCode, left time.Duration) bool {
	if !c.re.allows(code) || len(c.Tried) >= c.lim(b).policy.MaxAttempts || left < minTimeForRetry {
		return false
	}
	bud := b.service(c.Service)
	if !bud.withdraw(c.lim(b).policy.RetryBudget) {
		bud.exhausted.Add(1)
		return false
	}
	bud.granted.Add(1)
	return true
}

// Retries counts, over every service, the retries MayRetry granted and
// those the retry budget refused.
func (b *Balancer) Retries() (granted, exhausted int64) {
	b.services.Range(func(_, v any) bool {
		bud := v.(*serviceState)
		granted += bud.granted.Load()
		exhausted += bud.exhausted.Load()
		return true
	})
	return granted, exhausted
}

// Backoff is how long to wait before retry number n (1 for the first) with
// left until the deadline: exponential from 1ms, capped at 25ms and at a
// quarter of the time left, with full jitter so retries do not align.
func Backoff(n int, left time.Duration) time.Duration {
	b := min(backoffCap, backoffBase<<n)
	return min(time.Duration(rand.Int64N(int64(b)+1)), left/4)
}

// serviceState is what the Balancer keeps per service: its retry budget
// and its counters, under the service's label (its name, or golden.Other
// past the series cap).
type serviceState struct {
	retryBudget
	label     string
	crossZone [numZoneKinds]atomic.Int64 // attempts sent out of this meshd's zone, by why (zone.go)

	// Hedging (hedge.go): the answer times the delay is learned from, when
	// the service last answered Busy, the budget and what hedges did.
	latency     latencies
	lastBusy    atomic.Int64
	hedgeBudget retryBudget
	hedges      [numHedgeEvents]atomic.Int64
}

// service is service's state, made on its first call.
func (b *Balancer) service(service string) *serviceState {
	if v, ok := b.services.Load(service); ok {
		return v.(*serviceState)
	}
	st := &serviceState{retryBudget: retryBudget{last: time.Now()}, hedgeBudget: retryBudget{last: time.Now()}, label: golden.Other}
	if b.serviceSeries.Add(1) <= int64(b.caps.Services) {
		st.label = golden.Label(service)
	} else {
		b.serviceSeries.Add(-1)
	}
	v, loaded := b.services.LoadOrStore(service, st)
	switch {
	case loaded && st.label != golden.Other:
		b.serviceSeries.Add(-1)
	case !loaded && st.label == golden.Other && b.overflow != nil:
		b.overflow("service")
	}
	return v.(*serviceState)
}

// retryBudget keeps fading counts of calls and retries; a retry is allowed
// while retries stay within the policy's share of calls (or budgetFloor).
type retryBudget struct {
	mu             sync.Mutex
	calls, retries float64
	last           time.Time

	granted, exhausted atomic.Int64 // for metrics
}

// fade ages both counts to now.
func (b *retryBudget) fade(now time.Time) {
	f := math.Exp(-float64(now.Sub(b.last)) / float64(budgetMemory))
	b.calls *= f
	b.retries *= f
	b.last = now
}

func (b *retryBudget) deposit() {
	b.mu.Lock()
	b.fade(time.Now())
	b.calls++
	b.mu.Unlock()
}

func (b *retryBudget) withdraw(ratio float64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.fade(time.Now())
	if b.retries+1 > max(ratio*b.calls, budgetFloor) {
		return false
	}
	b.retries++
	return true
}
