package routing

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/meshrpc/mesh/frame"
)

// Result labels of mesh_calls_total, by slot.
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

// Latency buckets of mesh_call_duration_seconds, in seconds.
var latencyBuckets = [...]float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// endpointStats counts one instance's calls: updated with atomics only, so
// recording costs the call path no lock and no allocation.
type endpointStats struct {
	calls          [len(resultNames)]atomic.Int64
	buckets        [len(latencyBuckets) + 1]atomic.Int64
	sumNanos       atomic.Int64
	breakerChanges [3]atomic.Int64 // by the state changed to
}

func (s *endpointStats) record(o Outcome, rtt time.Duration) {
	s.calls[resultSlot(o)].Add(1)
	secs := rtt.Seconds()
	i := 0
	for i < len(latencyBuckets) && secs > latencyBuckets[i] {
		i++
	}
	s.buckets[i].Add(1)
	s.sumNanos.Add(int64(rtt))
}

// WriteMetrics writes what the Balancer learned, in the Prometheus text
// format: calls, latency, calls in flight and breakers per instance;
// retries and retries refused by the budget per service.
func (b *Balancer) WriteMetrics(w io.Writer) {
	var eps []*endpoint
	b.eps.m.Range(func(_, v any) bool { eps = append(eps, v.(*endpoint)); return true })
	slices.SortFunc(eps, func(a, b *endpoint) int { return strings.Compare(a.id, b.id) })

	fmt.Fprintln(w, "# HELP mesh_calls_total Calls relayed to an instance, by how they ended.")
	fmt.Fprintln(w, "# TYPE mesh_calls_total counter")
	for _, e := range eps {
		for i, name := range resultNames {
			if n := e.stats.calls[i].Load(); n > 0 {
				fmt.Fprintf(w, "mesh_calls_total{service=%q,instance=%q,result=%q} %d\n", e.service, e.id, name, n)
			}
		}
	}
	fmt.Fprintln(w, "# HELP mesh_call_duration_seconds Time from forwarding a call to its answer, per instance.")
	fmt.Fprintln(w, "# TYPE mesh_call_duration_seconds histogram")
	for _, e := range eps {
		var cum int64
		for i, le := range latencyBuckets {
			cum += e.stats.buckets[i].Load()
			fmt.Fprintf(w, "mesh_call_duration_seconds_bucket{service=%q,instance=%q,le=\"%g\"} %d\n", e.service, e.id, le, cum)
		}
		cum += e.stats.buckets[len(latencyBuckets)].Load()
		fmt.Fprintf(w, "mesh_call_duration_seconds_bucket{service=%q,instance=%q,le=\"+Inf\"} %d\n", e.service, e.id, cum)
		fmt.Fprintf(w, "mesh_call_duration_seconds_sum{service=%q,instance=%q} %g\n", e.service, e.id, time.Duration(e.stats.sumNanos.Load()).Seconds())
		fmt.Fprintf(w, "mesh_call_duration_seconds_count{service=%q,instance=%q} %d\n", e.service, e.id, cum)
	}
	fmt.Fprintln(w, "# HELP mesh_instance_calls_in_flight Calls forwarded to an instance and not yet answered.")
	fmt.Fprintln(w, "# TYPE mesh_instance_calls_in_flight gauge")
	for _, e := range eps {
		fmt.Fprintf(w, "mesh_instance_calls_in_flight{service=%q,instance=%q} %d\n", e.service, e.id, e.pending.Load())
	}
	fmt.Fprintln(w, "# HELP mesh_breaker_open Whether an instance's circuit breaker is open (1) or half-open (0.5).")
	fmt.Fprintln(w, "# TYPE mesh_breaker_open gauge")
	for _, e := range eps {
		v := 0.0
		switch e.breaker.State() {
		case gobreaker.StateOpen:
			v = 1
		case gobreaker.StateHalfOpen:
			v = 0.5
		}
		fmt.Fprintf(w, "mesh_breaker_open{service=%q,instance=%q} %g\n", e.service, e.id, v)
	}
	fmt.Fprintln(w, "# HELP mesh_breaker_transitions_total Circuit breaker state changes, by the state entered.")
	fmt.Fprintln(w, "# TYPE mesh_breaker_transitions_total counter")
	for _, e := range eps {
		for st := range e.stats.breakerChanges {
			if n := e.stats.breakerChanges[st].Load(); n > 0 {
				fmt.Fprintf(w, "mesh_breaker_transitions_total{service=%q,instance=%q,to=%q} %d\n", e.service, e.id, gobreaker.State(st).String(), n)
			}
		}
	}
	var services []string
	b.budgets.Range(func(k, _ any) bool { services = append(services, k.(string)); return true })
	slices.Sort(services)
	for _, m := range []struct {
		name, help string
		get        func(*retryBudget) int64
	}{
		{"mesh_retries_total", "Attempts sent again to another instance.", func(r *retryBudget) int64 { return r.granted.Load() }},
		{"mesh_retry_budget_exhausted_total", "Retries refused by the retry budget.", func(r *retryBudget) int64 { return r.exhausted.Load() }},
	} {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s counter\n", m.name, m.help, m.name)
		for _, s := range services {
			fmt.Fprintf(w, "%s{service=%q} %d\n", m.name, s, m.get(b.budget(s)))
		}
	}
}
