package relay

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshrpc/mesh/internal/golden"
	"github.com/meshrpc/mesh/internal/routing"
)

// refusalKey counts the calls one stage refused for one service.
type refusalKey struct{ stage, service string }

// maxRefusalSeries bounds the series of mesh_stage_refusals_total: past it,
// refusals of services not yet counted go to service="_other"; a name no
// service was found under is service="_unknown" (refuseCall), so calls to
// made-up names cannot grow the metrics (or the memory behind them).
const maxRefusalSeries = 1000

func (r *Relay) countRefusal(stage, service string) {
	switch stage {
	case routing.StageCallerLimit, routing.StageAdmission:
		r.stats.rateLimited.Add(1)
	}
	k := refusalKey{stage, service}
	v, ok := r.refusals.Load(k)
	if !ok && r.refusalSeries.Load() >= maxRefusalSeries {
		k.service = golden.Other
		v, ok = r.refusals.Load(k)
	}
	if !ok {
		var loaded bool
		if v, loaded = r.refusals.LoadOrStore(k, new(atomic.Int64)); !loaded {
			r.refusalSeries.Add(1)
		}
	}
	v.(*atomic.Int64).Add(1)
}

// collector is the Relay as a prometheus.Collector of its own counters
// (its Balancer and its edges are collectors of their own).
type collector Relay

var (
	descRefusals = prometheus.NewDesc("mesh_stage_refusals_total",
		"Calls a stage refused on this meshd, first and last hops, by stage and service (_unknown: no service by the name called).",
		[]string{"stage", "service"}, nil)
	descLimitHits = prometheus.NewDesc("mesh_limit_hits_total",
		"Times a limit on what one connection can make meshd hold was reached, by limit.", []string{"limit"}, nil)
	descEdgeRejected = prometheus.NewDesc("mesh_edge_rejected_total",
		"Calls (request) and answers (answer) from apps that failed the edge check.", []string{"what"}, nil)
	descRetryBytes = prometheus.NewDesc("mesh_relay_retry_bytes",
		"Request bytes kept for retries.", nil, nil)
	descInFlightCalls = prometheus.NewDesc("mesh_relay_calls_in_flight",
		"Calls being relayed by this meshd.", nil, nil)
	descTimeouts = prometheus.NewDesc("mesh_relay_timeouts_total",
		"Calls whose TTL ran out inside the relay.", nil, nil)
	descParked = prometheus.NewDesc("mesh_relay_parked_total",
		"Calls whose route had to wait (a first lookup, a dial), held off the read loop they came on, by the stage that waited.",
		[]string{"stage"}, nil)
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRefusals, descLimitHits, descEdgeRejected, descRetryBytes, descInFlightCalls, descTimeouts, descParked} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	r := (*Relay)(c)
	r.refusals.Range(func(k, v any) bool {
		key := k.(refusalKey)
		ch <- prometheus.MustNewConstMetric(descRefusals, prometheus.CounterValue, float64(v.(*atomic.Int64).Load()), key.stage, golden.Label(key.service))
		return true
	})
	for i, name := range limitNames {
		ch <- prometheus.MustNewConstMetric(descLimitHits, prometheus.CounterValue, float64(r.stats.limited[i].Load()), name)
	}
	ch <- prometheus.MustNewConstMetric(descEdgeRejected, prometheus.CounterValue, float64(r.stats.badRequests.Load()), "request")
	ch <- prometheus.MustNewConstMetric(descEdgeRejected, prometheus.CounterValue, float64(r.stats.badAnswers.Load()), "answer")
	ch <- prometheus.MustNewConstMetric(descRetryBytes, prometheus.GaugeValue, float64(r.savedTotal.Load()))
	ch <- prometheus.MustNewConstMetric(descInFlightCalls, prometheus.GaugeValue, float64(r.InFlight()))
	ch <- prometheus.MustNewConstMetric(descTimeouts, prometheus.CounterValue, float64(r.stats.timedOut.Load()))
	ch <- prometheus.MustNewConstMetric(descParked, prometheus.CounterValue, float64(r.stats.parked[0].Load()), routing.StageDiscover)
	ch <- prometheus.MustNewConstMetric(descParked, prometheus.CounterValue, float64(r.stats.parked[1].Load()), routing.StageConnect)
}
