package routing

import (
	mathbits "math/bits"
	"slices"
	"sync/atomic"
	"time"

	"github.com/meshrpc/mesh/frame"
)

// Hedged requests, after gRPC's hedging policy (gRFC A6) and Finagle's
// backup requests: a call to a method the policy marks safe to repeat that
// has not been answered after the hedge delay goes to a second instance
// too; the first answer wins and the other attempt is cancelled. The delay
// is fixed, or a percentile of the service's observed latency (learned
// here, in fixed memory, with atomics only). Hedges share the call's
// attempt limit and deadline with retries, and take from a budget of their
// own (a share of calls plus a floor), so a slow service cannot turn them
// into a storm; a service under pressure (a Busy answer within the last
// second, an open breaker among its instances) is not hedged. The relay
// sends and cancels the attempts; this file decides.

// Hedge events, the event label of mesh_hedges_total.
const (
	hedgeSent = iota
	hedgeWon
	hedgeCancelled
	hedgeRefusedBudget
	hedgeRefusedPressure
	numHedgeEvents
)

var hedgeEvents = [numHedgeEvents]string{"sent", "won", "cancelled", "refused_budget", "refused_pressure"}

const (
	// hedgeMinSamples is how many answers a service needs before a
	// percentile of them is taken for its hedge delay.
	hedgeMinSamples = 50
	// hedgeRecompute is how often the learned delay is read again from the
	// latency histogram; at most hedgeKeep answers are kept, the older ones
	// fading by halves.
	hedgeRecompute = 250 * time.Millisecond
	hedgeKeep      = 20000
	// busyMemory is how long a Busy answer keeps a service from hedging.
	busyMemory = time.Second
)

// latencies is a service's answer times as a log-scale histogram: 4
// buckets per power of two of microseconds, up to 2^40 µs.
type latencies struct {
	buckets    [4 * 41]atomic.Int64
	delay      atomic.Int64 // nanoseconds; 0: too few answers yet
	computedAt atomic.Int64 // unix nanoseconds of the last reading
}

func latencyBucket(d time.Duration) int {
	us := uint64(max(d.Microseconds(), 1))
	octave := mathbits.Len64(us) - 1 // us is in [2^octave, 2^(octave+1))
	sub := 0
	if octave >= 2 {
		sub = int(us>>(octave-2)) & 3
	}
	return min(4*octave+sub, 4*41-1)
}

// bucketTop is the largest duration bucket i holds.
func bucketTop(i int) time.Duration {
	octave, sub := i/4, i%4
	if octave < 2 {
		return time.Duration(2<<octave) * time.Microsecond
	}
	return time.Duration((uint64(5+sub) << (octave - 2))) * time.Microsecond
}

func (l *latencies) observe(d time.Duration) { l.buckets[latencyBucket(d)].Add(1) }

// percentile reads the q-th percentile of the answers, every
// hedgeRecompute at most; older answers fade by halves past hedgeKeep.
func (l *latencies) percentile(q float64, now int64) time.Duration {
	last := l.computedAt.Load()
	if now-last < int64(hedgeRecompute) || !l.computedAt.CompareAndSwap(last, now) {
		return time.Duration(l.delay.Load())
	}
	var counts [len(l.buckets)]int64
	total := int64(0)
	for i := range l.buckets {
		counts[i] = l.buckets[i].Load()
		total += counts[i]
	}
	if total > hedgeKeep {
		for i := range l.buckets {
			l.buckets[i].Add(-counts[i] / 2)
		}
	}
	if total < hedgeMinSamples {
		l.delay.Store(0)
		return 0
	}
	want, seen := int64(q*float64(total)), int64(0)
	for i, n := range counts {
		if seen += n; seen > want {
			l.delay.Store(int64(bucketTop(i)))
			break
		}
	}
	return time.Duration(l.delay.Load())
}

// HedgeAfter is how long c's first attempt may go unanswered before a
// hedge is sent (0: c is not hedged): its method is one the policy marks
// safe to repeat, the caller did not forbid repeats ("re: n"), the policy
// allows a second attempt, and a delay is known (fixed, or learned from
// enough answers).
func (b *Balancer) HedgeAfter(c *Call) time.Duration {
	p := &c.lim(b).policy // not a copy of the whole policy per call
	if len(p.HedgeMethods) == 0 || c.re.never || p.MaxAttempts < 2 || c.ShardKey() != nil {
		return 0
	}
	if !slices.Contains(p.HedgeMethods, "*") && !slices.Contains(p.HedgeMethods, c.Method) {
		return 0
	}
	if d := p.HedgeDelay.D(); d > 0 {
		return d
	}
	return b.service(c.Service).latency.percentile(p.HedgePercentile, time.Now().UnixNano())
}

// MayHedge decides, when c's hedge delay has passed, whether a hedge may
// go: attempts and time are left, the service is not under pressure, and
// its hedge budget has room (a true answer takes from it).
func (b *Balancer) MayHedge(c *Call, left time.Duration) bool {
	p := &c.lim(b).policy
	st := b.service(c.Service)
	if len(c.Tried) >= p.MaxAttempts || left < minTimeForRetry {
		return false
	}
	if c.choice.open > 0 || time.Now().UnixNano()-st.lastBusy.Load() < int64(busyMemory) {
		st.hedges[hedgeRefusedPressure].Add(1)
		return false
	}
	if !st.hedgeBudget.withdraw(p.HedgeBudget) {
		st.hedges[hedgeRefusedBudget].Add(1)
		return false
	}
	return true
}

// HedgeSent counts a hedge of service sent.
func (b *Balancer) HedgeSent(service string) { b.service(service).hedges[hedgeSent].Add(1) }

// HedgeEnded tells the Balancer how a hedged call ended: won, the hedge's
// answer came first; else the first attempt's did. Either way one attempt
// was cancelled.
func (b *Balancer) HedgeEnded(service string, won bool) {
	st := b.service(service)
	if won {
		st.hedges[hedgeWon].Add(1)
	}
	st.hedges[hedgeCancelled].Add(1)
}

// learn is what the service learns from an attempt's end: answer times for
// the hedge delay, and when it last answered Busy.
func (st *serviceState) learn(o Outcome, rtt time.Duration, now time.Time) {
	switch {
	case o.Code == 0:
		st.latency.observe(rtt)
	case o.Code == frame.ErrCodeBusy:
		st.lastBusy.Store(now.UnixNano())
	}
}
