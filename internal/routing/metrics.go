package routing

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"

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

// endpointStats counts one instance's attempts: updated with atomics only,
// so recording costs the call path no lock and no allocation.
type endpointStats struct {
	calls          [len(resultNames)]atomic.Int64
	buckets        [len(golden.Buckets) + 1]atomic.Int64
	sumNanos       atomic.Int64
	breakerChanges [3]atomic.Int64 // by the state changed to
}

func (s *endpointStats) record(o Outcome, rtt time.Duration) {
	s.calls[resultSlot(o)].Add(1)
	secs := rtt.Seconds()
	i := 0
	for i < len(golden.Buckets) && secs > golden.Buckets[i] {
		i++
	}
	s.buckets[i].Add(1)
	s.sumNanos.Add(int64(rtt))
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
		"An instance's circuit breaker: 1 for the state it is in (closed, half_open, open), 0 for the others.",
		append(instanceLabels, "state"), nil)
	descBreakerChanges = prometheus.NewDesc("mesh_breaker_transitions_total",
		"Circuit breaker state changes, by the state entered.", append(instanceLabels, "to"), nil)
	descRetries = prometheus.NewDesc("mesh_retries_total",
		"Attempts sent again to another instance.", []string{"service"}, nil)
	descBudgetExhausted = prometheus.NewDesc("mesh_retry_budget_exhausted_total",
		"Retries refused by the service's retry budget.", []string{"service"}, nil)
)

// Describe sends the descriptions of the Balancer's metrics
// (prometheus.Collector).
func (b *Balancer) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descAttempts, descAttemptSecs, descInFlight, descBreaker, descBreakerChanges, descRetries, descBudgetExhausted} {
		ch <- d
	}
}

// Collect sends what the Balancer learned (prometheus.Collector): the
// attempts, latency, breaker and attempts in flight of each instance it
// knows (an instance it forgot has no series), retries per service.
func (b *Balancer) Collect(ch chan<- prometheus.Metric) {
	b.eps.m.Range(func(_, v any) bool {
		e := v.(*endpoint)
		l := []string{golden.Label(e.service), golden.Label(e.id), golden.Label(e.addr)}
		for i, name := range resultNames {
			if n := e.stats.calls[i].Load(); n > 0 {
				ch <- prometheus.MustNewConstMetric(descAttempts, prometheus.CounterValue, float64(n), append(l, name)...)
			}
		}
		buckets := make(map[float64]uint64, len(golden.Buckets))
		var cum uint64
		for i, le := range golden.Buckets {
			cum += uint64(e.stats.buckets[i].Load())
			buckets[le] = cum
		}
		cum += uint64(e.stats.buckets[len(golden.Buckets)].Load())
		ch <- prometheus.MustNewConstHistogram(descAttemptSecs, cum, time.Duration(e.stats.sumNanos.Load()).Seconds(), buckets, l...)
		ch <- prometheus.MustNewConstMetric(descInFlight, prometheus.GaugeValue, float64(e.pending.Load()), l...)
		now := e.breaker.State()
		for _, s := range breakerStates {
			v := 0.0
			if s.state == now {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(descBreaker, prometheus.GaugeValue, v, append(l, s.name)...)
			if n := e.stats.breakerChanges[s.state].Load(); n > 0 {
				ch <- prometheus.MustNewConstMetric(descBreakerChanges, prometheus.CounterValue, float64(n), append(l, s.name)...)
			}
		}
		return true
	})
	b.budgets.Range(func(k, v any) bool {
		bud := v.(*retryBudget)
		service := golden.Label(k.(string))
		ch <- prometheus.MustNewConstMetric(descRetries, prometheus.CounterValue, float64(bud.granted.Load()), service)
		ch <- prometheus.MustNewConstMetric(descBudgetExhausted, prometheus.CounterValue, float64(bud.exhausted.Load()), service)
		return true
	})
}
