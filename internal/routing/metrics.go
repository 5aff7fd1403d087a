package routing

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"
	"go.opentelemetry.io/otel/trace"

	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/golden"
)

// Result labels of mesh_instance_attempts_total, by slot.
var resultNames = [...]string{"ok", "app_error", "timeout", "cancelled", "busy", "declined", "unexpected", "bad_request", "network", "unhealthy", "other"}

func resultSlot(o Outcome) int {
	switch {
	case o.Code == 0 && o.AppErr:
		return 1
	case o.Code == 0:
		return 0
	case o.Code >= frame.ErrCodeTimeout && o.Code <= frame.ErrCodeUnhealthy:
		return int(o.Code) + 1
	}
	return len(resultNames) - 1
}

// Breaker states as the state label of mesh_breaker_state says them.
var breakerStates = [...]struct {
	state gobreaker.State
	name  string
}{{gobreaker.StateClosed, "closed"}, {gobreaker.StateHalfOpen, "half_open"}, {gobreaker.StateOpen, "open"}}

// endpointStats counts one instance's attempts (or, together, those of
// the instances past the series cap): updated with atomics only, so
// recording costs the call path no lock and no allocation, but for a
// sampled call's exemplar.
type endpointStats struct {
	calls          [len(resultNames)]atomic.Int64
	buckets        [len(golden.Buckets) + 1]atomic.Int64
	sumNanos       atomic.Int64
	breakerChanges [3]atomic.Int64 // by the state changed to
	// The last sampled call of each bucket, for the histogram's exemplars.
	exemplars [len(golden.Buckets) + 1]atomic.Pointer[exemplar]
}

type exemplar struct {
	trace trace.TraceID
	rtt   time.Duration
	at    time.Time
}

// used reports whether any attempt was recorded.
func (s *endpointStats) used() bool {
	for i := range s.calls {
		if s.calls[i].Load() > 0 {
			return true
		}
	}
	return false
}

func (s *endpointStats) record(o Outcome, rtt time.Duration, tid trace.TraceID, now time.Time) {
	s.calls[resultSlot(o)].Add(1)
	secs := rtt.Seconds()
	i := 0
	for i < len(golden.Buckets) && secs > golden.Buckets[i] {
		i++
	}
	s.buckets[i].Add(1)
	s.sumNanos.Add(int64(rtt))
	if tid.IsValid() {
		s.exemplars[i].Store(&exemplar{trace: tid, rtt: rtt, at: now})
	}
}

// The Balancer's metric families: per instance (labelled service,
// instance_id and instance_addr, never "instance", which is Prometheus's
// own target label) and per service.
var (
	instanceLabels = []string{"service", "instance_id", "instance_addr"}
	descAttempts   = prometheus.NewDesc("mesh_instance_attempts_total",
		"Attempts sent to an instance, by how they ended (a call retried elsewhere is two attempts).",
		append(instanceLabels, "result"), nil)
	descAttemptSecs = prometheus.NewDesc("mesh_instance_attempt_duration_seconds",
		"Time from sending an attempt to an instance to its answer.", instanceLabels, nil)
	descInFlight = prometheus.NewDesc("mesh_instance_attempts_in_flight",
		"Attempts sent to an instance and not yet answered.", instanceLabels, nil)
	descBreaker = prometheus.NewDesc("mesh_breaker_state",
		"An instance's circuit breaker: 1 for the state it is in (closed, half_open, open), 0 for the others; under instance_id \"_other\", how many of the instances past the series cap are in each state.",
		append(instanceLabels, "state"), nil)
	descBreakerChanges = prometheus.NewDesc("mesh_breaker_transitions_total",
		"Circuit breaker state changes, by the state entered.", append(instanceLabels, "to"), nil)
	descRetries = prometheus.NewDesc("mesh_retries_total",
		"Attempts sent again to another instance.", []string{"service"}, nil)
	descCrossZone = prometheus.NewDesc("mesh_cross_zone_attempts_total",
		"Attempts sent to an instance outside this meshd's zone, by why: spillover (home lacks the capacity its callers need), home_down, no_untried_instance, too_few_instances, too_many_zones, zones_off, shard_key.",
		[]string{"service", "cause"}, nil)
	descHedges = prometheus.NewDesc("mesh_hedges_total",
		"Hedged requests, by event: sent (a second attempt while the first had not answered), won (the hedge answered first), cancelled (the attempt that lost), refused_budget, refused_pressure.",
		[]string{"service", "event"}, nil)
	descBudgetExhausted = prometheus.NewDesc("mesh_retry_budget_exhausted_total",
		"Retries refused by the service's retry budget.", []string{"service"}, nil)
)

// Describe sends the descriptions of the Balancer's metrics
// (prometheus.Collector).
func (b *Balancer) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descAttempts, descAttemptSecs, descInFlight, descBreaker, descBreakerChanges, descRetries, descBudgetExhausted, descCrossZone, descHedges} {
		ch <- d
	}
}

// CapSeries bounds the Balancer's metric series by caps (Instances and
// Services; zero fields: the defaults): past them, instances and services
// are counted together under golden.Other, and overflow (if not nil) is
// told of each ("instance", "service"). Call it before the first call.
func (b *Balancer) CapSeries(caps golden.Caps, overflow func(label string)) {
	b.caps = caps.WithDefaults()
	b.overflow = overflow
	b.eps.maxSeries, b.eps.overflow = int64(b.caps.Instances), overflow
}

// Collect sends what the Balancer learned (prometheus.Collector): the
// attempts, latency, breaker and attempts in flight of each instance it
// knows (an instance it forgot has no series; those past the cap are
// summed under golden.Other, their breakers counted by state), retries per
// service.
func (b *Balancer) Collect(ch chan<- prometheus.Metric) {
	var over struct {
		n, pending int64
		states     [3]int64
	}
	b.eps.m.Range(func(_, v any) bool {
		e := v.(*endpoint)
		if e.stats == &b.eps.over {
			over.n++
			over.pending += e.pending.Load()
			over.states[e.breaker.State()]++
			return true
		}
		l := []string{golden.Label(e.service), golden.Label(e.id), golden.Label(e.addr)}
		var states [3]int64
		states[e.breaker.State()] = 1
		collectInstance(ch, l, e.stats, e.pending.Load(), states)
		return true
	})
	if over.n > 0 || b.eps.over.used() {
		collectInstance(ch, []string{golden.Other, golden.Other, golden.Other}, &b.eps.over, over.pending, over.states)
	}
	type counts struct {
		granted, exhausted int64
		crossZone          [numZoneKinds]int64
		hedges             [numHedgeEvents]int64
	}
	byLabel := map[string]*counts{} // services past the cap share golden.Other
	b.services.Range(func(_, v any) bool {
		st := v.(*serviceState)
		n := byLabel[st.label]
		if n == nil {
			n = new(counts)
			byLabel[st.label] = n
		}
		n.granted += st.granted.Load()
		n.exhausted += st.exhausted.Load()
		for k := range st.crossZone {
			n.crossZone[k] += st.crossZone[k].Load()
		}
		for k := range st.hedges {
			n.hedges[k] += st.hedges[k].Load()
		}
		return true
	})
	for service, n := range byLabel {
		ch <- prometheus.MustNewConstMetric(descRetries, prometheus.CounterValue, float64(n.granted), service)
		ch <- prometheus.MustNewConstMetric(descBudgetExhausted, prometheus.CounterValue, float64(n.exhausted), service)
		for k, c := range n.crossZone {
			if c > 0 {
				ch <- prometheus.MustNewConstMetric(descCrossZone, prometheus.CounterValue, float64(c), service, zoneCauses[k])
			}
		}
		for k, c := range n.hedges {
			if c > 0 {
				ch <- prometheus.MustNewConstMetric(descHedges, prometheus.CounterValue, float64(c), service, hedgeEvents[k])
			}
		}
	}
}

// collectInstance sends the series of one instance labelled l (service,
// instance_id, instance_addr): s its counts, pending its attempts in
// flight, states how many of its breakers are in each state.
func collectInstance(ch chan<- prometheus.Metric, l []string, s *endpointStats, pending int64, states [3]int64) {
	for i, name := range resultNames {
		if n := s.calls[i].Load(); n > 0 {
			ch <- prometheus.MustNewConstMetric(descAttempts, prometheus.CounterValue, float64(n), append(l, name)...)
		}
	}
	buckets := make(map[float64]uint64, len(golden.Buckets))
	var cum uint64
	var exemplars []prometheus.Exemplar
	for i := range s.buckets {
		cum += uint64(s.buckets[i].Load())
		if i < len(golden.Buckets) {
			buckets[golden.Buckets[i]] = cum
		}
		if x := s.exemplars[i].Load(); x != nil {
			exemplars = append(exemplars, prometheus.Exemplar{Value: x.rtt.Seconds(),
				Labels: prometheus.Labels{"trace_id": golden.TraceID(x.trace)}, Timestamp: x.at})
		}
	}
	var h prometheus.Metric = prometheus.MustNewConstHistogram(descAttemptSecs, cum, time.Duration(s.sumNanos.Load()).Seconds(), buckets, l...)
	if len(exemplars) > 0 {
		h = prometheus.MustNewMetricWithExemplars(h, exemplars...)
	}
	ch <- h
	ch <- prometheus.MustNewConstMetric(descInFlight, prometheus.GaugeValue, float64(pending), l...)
	for _, bs := range breakerStates {
		ch <- prometheus.MustNewConstMetric(descBreaker, prometheus.GaugeValue, float64(states[bs.state]), append(l, bs.name)...)
		if n := s.breakerChanges[bs.state].Load(); n > 0 {
			ch <- prometheus.MustNewConstMetric(descBreakerChanges, prometheus.CounterValue, float64(n), append(l, bs.name)...)
		}
	}
}
