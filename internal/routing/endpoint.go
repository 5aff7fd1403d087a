package routing

import (
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"
	"go.opentelemetry.io/otel/trace"

	"github.com/meshrpc/mesh/discovery"
)

// peakEWMADecay is the time constant of the latency average: an observation
// loses half its weight in about 0.7s. A latency above the average replaces
// it at once (the "peak"), so a slowing instance is avoided within one call,
// while a one-off stall of a fast instance is forgotten in well under a
// second instead of sending traffic to a slow one meanwhile.
const peakEWMADecay = time.Second

// endpoint is what the Balancer learns about one instance from the calls
// sent there: calls in flight, a peak-sensitive latency average, and a
// circuit breaker.
type endpoint struct {
	id      string
	hash    uint64 // of the id, for rendezvous hashing
	pending atomic.Int64
	breaker *gobreaker.CircuitBreaker[struct{}]
	// state mirrors the breaker's state as its OnStateChange last set it:
	// while it says closed, usable needs no lock.
	state   atomic.Int32
	service string
	addr    string // of the meshd that delivers to it
	zone    string // its meshd's (discovery.MetaZone)
	svc     *serviceState
	// stats are its own, or the endpoints' overflow shared by the
	// instances past the series cap.
	stats *endpointStats

	// The latency average, in nanoseconds (float64 bits), and when it was
	// last updated (unix nanoseconds, 0: never): atomics, so that a pick
	// reading costs takes no lock. Two observations racing may blend a
	// little differently than in sequence, which a heuristic can afford.
	ewma  atomic.Uint64
	stamp atomic.Int64

	downUntil atomic.Int64 // unix nanos until which it is known unreachable; 0: not
	listed    atomic.Int64 // unix nanos when a call last found it among its service's instances
}

// seen notes that a call found e listed at now (unix nanos); the stamp is
// written at most once a second, so calls share no cache line write.
func (e *endpoint) seen(now int64) {
	if now-e.listed.Load() > int64(time.Second) {
		e.listed.Store(now)
	}
}

// reachable reports whether the instance is not known unreachable (Down).
func (e *endpoint) reachable() bool {
	until := e.downUntil.Load()
	return until == 0 || time.Now().UnixNano() >= until
}

// cost is the expected wait at this instance: latency times queue length.
// The latency decays toward zero while the instance gets no calls, so one
// that was avoided is tried again once it has been left alone a while.
func (e *endpoint) cost() float64 {
	l := math.Float64frombits(e.ewma.Load())
	if stamp := e.stamp.Load(); stamp != 0 {
		l *= math.Exp(-float64(time.Now().UnixNano()-stamp) / float64(peakEWMADecay))
	}
	return (l + 1000) * float64(e.pending.Load()+1)
}

// observe folds one call's latency into the average.
func (e *endpoint) observe(rtt time.Duration, now time.Time) {
	x, at := float64(rtt), now.UnixNano()
	for {
		old, stamp := e.ewma.Load(), e.stamp.Load()
		avg := math.Float64frombits(old)
		next := x
		if x <= avg && stamp != 0 {
			w := math.Exp(-float64(at-stamp) / float64(peakEWMADecay))
			next = avg*w + x*(1-w)
		}
		if e.ewma.CompareAndSwap(old, math.Float64bits(next)) {
			e.stamp.Store(at)
			return
		}
	}
}

// usable reports whether the breaker lets calls through: not while open,
// and while half-open only as many at once as it takes probes. A closed
// breaker only leaves that state through a failure that e learns of (its
// OnStateChange), so the common case reads an atomic; only an open or
// half-open breaker is asked, since its timeout moves it on when asked.
func (e *endpoint) usable() bool {
	if gobreaker.State(e.state.Load()) == gobreaker.StateClosed {
		return true
	}
	switch e.breaker.State() {
	case gobreaker.StateOpen:
		return false
	case gobreaker.StateHalfOpen:
		return e.pending.Load() < breakerProbes
	}
	return true
}

// judge tells an endpoint how one attempt that took rtt went; tid is the
// trace id of a sampled call (zero: not sampled).
func (e *endpoint) judge(rtt time.Duration, o Outcome, tid trace.TraceID) {
	if e == nil {
		return
	}
	e.pending.Add(-1)
	if o.callerGone() {
		return
	}
	now := time.Now()
	e.stats.record(o, rtt, tid, now)
	e.svc.learn(o, rtt, now)
	e.observe(rtt, now)
	if o.failed() {
		e.breaker.Execute(broke)
	} else {
		e.breaker.Execute(passed)
	}
}

// The breaker learns outcomes after the fact: Execute runs one of these.
var errInstanceFailed = errors.New("instance failed the call")

func passed() (struct{}, error) { return struct{}{}, nil }
func broke() (struct{}, error)  { return struct{}{}, errInstanceFailed }

// endpoints keeps an endpoint per instance id, and bounds their metric
// series: past maxSeries instances with series of their own, the others
// share over.
type endpoints struct {
	m         sync.Map // id → *endpoint
	settings  func(e *endpoint) gobreaker.Settings
	service   func(name string) *serviceState
	maxSeries int64
	series    atomic.Int64 // endpoints with stats of their own
	over      endpointStats
	overflow  func(label string) // told of each endpoint counted in over (nil: no one)
}

func (s *endpoints) get(inst discovery.Instance) *endpoint {
	if v, ok := s.m.Load(inst.ID); ok {
		return v.(*endpoint)
	}
	e := &endpoint{id: inst.ID, service: inst.Service, addr: inst.Addr, zone: inst.Meta[discovery.MetaZone],
		hash: hashBytes([]byte(inst.ID)), stats: &s.over}
	if s.series.Add(1) <= s.maxSeries {
		e.stats = new(endpointStats)
	} else {
		s.series.Add(-1)
	}
	e.svc = s.service(inst.Service)
	e.listed.Store(time.Now().UnixNano())
	e.breaker = gobreaker.NewCircuitBreaker[struct{}](s.settings(e))
	v, loaded := s.m.LoadOrStore(inst.ID, e)
	switch {
	case loaded:
		s.release(e)
	case e.stats == &s.over && s.overflow != nil:
		s.overflow("instance")
	}
	return v.(*endpoint)
}

// release gives back e's series, when it had its own.
func (s *endpoints) release(e *endpoint) {
	if e.stats != &s.over {
		s.series.Add(-1)
	}
}

// How a breaker counts (its thresholds and open time are the policy's):
// the failure ratio applies from 20 calls in a 10s window, and up to 3 probe
// calls decide whether an open breaker closes again.
const (
	breakerMinCalls = 20
	breakerWindow   = 10 * time.Second
	breakerProbes   = 3
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
			e.state.Store(int32(to))
			e.stats.breakerChanges[to].Add(1)
			b.log.Info("circuit breaker changed", "instance", name, "from", from.String(), "to", to.String())
		},
	}
}

// ForgetAfter is how long the Balancer keeps an instance no call has found
// listed (it left, or its service is no longer called): then its breaker,
// latency and metric series go.
const ForgetAfter = time.Minute

// Forget drops what the Balancer learned of the instances no call found
// listed since before now-after and that have no attempt in flight; meshd
// calls it periodically (with ForgetAfter), so departed instances leave
// no series or memory behind.
func (b *Balancer) Forget(now time.Time, after time.Duration) (forgot int) {
	cut := now.Add(-after).UnixNano()
	b.eps.m.Range(func(k, v any) bool {
		if e := v.(*endpoint); e.listed.Load() < cut && e.pending.Load() == 0 && b.eps.m.CompareAndDelete(k, v) {
			b.eps.release(e)
			forgot++
		}
		return true
	})
	return forgot
}

// Breaker is the state of one instance's circuit breaker, for people.
type Breaker struct {
	Service string `json:"service"`
	ID      string `json:"id"`
	Addr    string `json:"addr"`
	State   string `json:"state"` // closed, half_open, open
}

// Breakers lists the breakers of the instances the Balancer knows.
func (b *Balancer) Breakers() []Breaker {
	var out []Breaker
	b.eps.m.Range(func(_, v any) bool {
		e := v.(*endpoint)
		out = append(out, Breaker{Service: e.service, ID: e.id, Addr: e.addr, State: stateName(e.breaker.State())})
		return true
	})
	return out
}

func stateName(s gobreaker.State) string {
	for _, bs := range breakerStates {
		if bs.state == s {
			return bs.name
		}
	}
	return s.String()
}
