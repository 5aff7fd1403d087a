package dashboard

import (
	"cmp"
	"context"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/meshrpc/mesh/internal/tracequery"
)

// Traces reads traces of meshd's spans from a trace backend's query API
// (internal/tracequery).
type Traces struct {
	tracequery.Backend
	UI      string // the trace UI's base for links (default the Backend's URL)
	Service string // the service name of meshd's spans (--trace-service)
}

// Found is the answer of /api/v1/traces.
type Found struct {
	Backend string             `json:"backend"`
	Slowest []tracequery.Trace `json:"slowest"`
	Failed  []tracequery.Trace `json:"failed"`
}

// searchLimit is how many recent traces are read to pick from.
const searchLimit = 200

// Find reads the recent traces in which meshd relayed calls to service
// (and method, when not ""), over the last hour.
func (t *Traces) Find(ctx context.Context, service, method string) ([]tracequery.Trace, error) {
	traces, err := t.Search(ctx, tracequery.Query{
		Service: t.Service, Tags: map[string]string{"mesh.service": service},
		Name:     strings.ToLower(method), // Zipkin's span names are lower case, and Jaeger keeps them so
		Lookback: time.Hour, Limit: searchLimit,
	})
	for i := range traces {
		traces[i].Link = t.link(traces[i].ID)
	}
	return traces, err
}

func (t *Traces) link(id string) string {
	base := cmp.Or(t.UI, t.URL)
	if t.API == tracequery.Zipkin {
		return base + "/zipkin/traces/" + id
	}
	return base + "/trace/" + id
}

// traces answers with the slowest and the failed recent traces of a
// service (?service=, ?method=), 10 of each.
func (d *dash) traces(w http.ResponseWriter, r *http.Request) {
	if d.v.cfg.Traces == nil {
		http.Error(w, "no trace backend to read: start meshd with --trace-query (Jaeger's or Zipkin's query API)", http.StatusServiceUnavailable)
		return
	}
	service := r.URL.Query().Get("service")
	if service == "" {
		http.Error(w, "service: which service's traces", http.StatusBadRequest)
		return
	}
	all, err := d.v.cfg.Traces.Find(r.Context(), service, r.URL.Query().Get("method"))
	if err != nil {
		http.Error(w, "reading traces: "+err.Error(), http.StatusBadGateway)
		return
	}
	f := Found{Backend: d.v.cfg.Traces.API, Slowest: []tracequery.Trace{}, Failed: []tracequery.Trace{}}
	slices.SortFunc(all, func(a, b tracequery.Trace) int { return cmp.Compare(b.Millis, a.Millis) })
	for _, tr := range all {
		if tr.Error && len(f.Failed) < 10 {
			f.Failed = append(f.Failed, tr)
		}
	}
	f.Slowest = all[:min(10, len(all))]
	writeJSON(w, f)
}
