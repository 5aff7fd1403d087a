package relay

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/meshrpc/mesh/internal/routing"
)

// refusalKey counts the calls one stage refused for one service.
type refusalKey struct{ stage, service string }

// maxRefusalSeries bounds the series of mesh_stage_refusals_total: past it,
// refusals of services not yet counted go to service="_other", so calls to
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
		k.service = "_other"
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

// WriteMetrics writes the relay's metrics, with its Balancer's, in the
// Prometheus text format.
func (r *Relay) WriteMetrics(w io.Writer) {
	r.bal.WriteMetrics(w)
	var keys []refusalKey
	refused := map[refusalKey]int64{}
	services := map[string]bool{}
	r.refusals.Range(func(k, v any) bool {
		key := k.(refusalKey)
		keys = append(keys, key)
		refused[key] = v.(*atomic.Int64).Load()
		services[key.service] = true
		return true
	})
	slices.SortFunc(keys, func(a, b refusalKey) int {
		return strings.Compare(a.stage+"\x00"+a.service, b.stage+"\x00"+b.service)
	})
	fmt.Fprintln(w, "# HELP mesh_stage_refusals_total Calls a routing stage refused, by stage.")
	fmt.Fprintln(w, "# TYPE mesh_stage_refusals_total counter")
	for _, k := range keys {
		fmt.Fprintf(w, "mesh_stage_refusals_total{stage=%q,service=%q} %d\n", k.stage, k.service, refused[k])
	}
	seen := slices.Sorted(maps.Keys(services))
	fmt.Fprintln(w, "# HELP mesh_rate_limited_total Calls refused by a rate or concurrency limit.")
	fmt.Fprintln(w, "# TYPE mesh_rate_limited_total counter")
	for _, s := range seen {
		fmt.Fprintf(w, "mesh_rate_limited_total{service=%q} %d\n", s, refused[refusalKey{routing.StageCallerLimit, s}]+refused[refusalKey{routing.StageAdmission, s}])
	}
	fmt.Fprintln(w, "# HELP mesh_kill_switch_total Calls refused by the kill switch.")
	fmt.Fprintln(w, "# TYPE mesh_kill_switch_total counter")
	for _, s := range seen {
		fmt.Fprintf(w, "mesh_kill_switch_total{service=%q} %d\n", s, refused[refusalKey{routing.StageKillSwitch, s}])
	}
	fmt.Fprintln(w, "# HELP mesh_limit_hits_total Times a limit on what one connection can make meshd hold was reached, by limit.")
	fmt.Fprintln(w, "# TYPE mesh_limit_hits_total counter")
	for i, name := range limitNames {
		fmt.Fprintf(w, "mesh_limit_hits_total{limit=%q} %d\n", name, r.stats.limited[i].Load())
	}
	fmt.Fprintln(w, "# HELP mesh_edge_rejected_total Calls (request) and answers (answer) from apps that failed the edge check.")
	fmt.Fprintln(w, "# TYPE mesh_edge_rejected_total counter")
	fmt.Fprintf(w, "mesh_edge_rejected_total{what=\"request\"} %d\n", r.stats.badRequests.Load())
	fmt.Fprintf(w, "mesh_edge_rejected_total{what=\"answer\"} %d\n", r.stats.badAnswers.Load())
	fmt.Fprintln(w, "# HELP mesh_relay_retry_bytes Request bytes kept for retries.")
	fmt.Fprintln(w, "# TYPE mesh_relay_retry_bytes gauge")
	fmt.Fprintf(w, "mesh_relay_retry_bytes %d\n", r.savedTotal.Load())
	fmt.Fprintln(w, "# HELP mesh_relay_calls_in_flight Calls being relayed by this meshd.")
	fmt.Fprintln(w, "# TYPE mesh_relay_calls_in_flight gauge")
	fmt.Fprintf(w, "mesh_relay_calls_in_flight %d\n", r.InFlight())
	fmt.Fprintln(w, "# HELP mesh_relay_timeouts_total Calls whose TTL ran out inside the relay.")
	fmt.Fprintln(w, "# TYPE mesh_relay_timeouts_total counter")
	fmt.Fprintf(w, "mesh_relay_timeouts_total %d\n", r.stats.timedOut.Load())
	fmt.Fprintln(w, "# HELP mesh_relay_parked_total Calls whose route had to wait (a first lookup, a dial), held off the read loop they came on, by the stage that waited.")
	fmt.Fprintln(w, "# TYPE mesh_relay_parked_total counter")
	fmt.Fprintf(w, "mesh_relay_parked_total{stage=%q} %d\n", routing.StageDiscover, r.stats.parked[0].Load())
	fmt.Fprintf(w, "mesh_relay_parked_total{stage=%q} %d\n", routing.StageConnect, r.stats.parked[1].Load())
}
