package dashboard

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Traces reads traces of meshd's spans from a trace backend's query API:
// Jaeger's (/api/traces) or Zipkin's (/api/v2/traces).
type Traces struct {
	API     string // "jaeger" or "zipkin"
	URL     string // the query API's base, e.g. http://127.0.0.1:16686
	UI      string // the trace UI's base for links (default URL)
	Service string // the service name of meshd's spans (--trace-service)
	Client  *http.Client
}

// Trace is one trace, its spans relative to its start.
type Trace struct {
	ID     string    `json:"id"`
	Start  time.Time `json:"start"`
	Millis float64   `json:"ms"`
	Error  bool      `json:"error"`
	Root   string    `json:"root"` // the first span's service and name
	Link   string    `json:"link"`
	Spans  []Span    `json:"spans"`
}

// Span is one span of a Trace.
type Span struct {
	ID      string            `json:"id"`
	Parent  string            `json:"parent,omitempty"`
	Service string            `json:"service"`
	Name    string            `json:"name"`
	StartMs float64           `json:"start_ms"` // from the trace's start
	Millis  float64           `json:"ms"`
	Error   bool              `json:"error"`
	Tags    map[string]string `json:"tags,omitempty"`
}

// Found is the answer of /api/v1/traces.
type Found struct {
	Backend string  `json:"backend"`
	Slowest []Trace `json:"slowest"`
	Failed  []Trace `json:"failed"`
}

// searchLimit is how many recent traces are read to pick from.
const searchLimit = 200

// Find reads the recent traces in which meshd relayed calls to service
// (and method, when not ""), over the last hour.
func (t *Traces) Find(ctx context.Context, service, method string) ([]Trace, error) {
	client := t.Client
	if client == nil {
		client = &http.Client{Timeout: 5 * time.Second}
	}
	method = strings.ToLower(method) // Zipkin's span names are lower case, and Jaeger keeps them so
	q := url.Values{}
	var path string
	switch t.API {
	case "zipkin":
		path = "/api/v2/traces"
		q.Set("serviceName", t.Service)
		q.Set("annotationQuery", "mesh.service="+service)
		if method != "" {
			q.Set("spanName", method)
		}
		q.Set("limit", strconv.Itoa(searchLimit))
		q.Set("lookback", strconv.Itoa(int(time.Hour/time.Millisecond)))
		q.Set("endTs", strconv.FormatInt(time.Now().UnixMilli(), 10))
	default:
		path = "/api/traces"
		q.Set("service", t.Service)
		tags, _ := json.Marshal(map[string]string{"mesh.service": service})
		q.Set("tags", string(tags))
		if method != "" {
			q.Set("operation", method)
		}
		q.Set("limit", strconv.Itoa(searchLimit))
		q.Set("lookback", "1h")
	}
	req, err := http.NewRequestWithContext(ctx, "GET", t.URL+path+"?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	res, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s answered %s", t.URL+path, res.Status)
	}
	var traces []Trace
	if t.API == "zipkin" {
		traces, err = decodeZipkin(res)
	} else {
		traces, err = decodeJaeger(res)
	}
	for i := range traces {
		traces[i].Link = t.link(traces[i].ID)
	}
	return traces, err
}

func (t *Traces) link(id string) string {
	base := cmp.Or(t.UI, t.URL)
	if t.API == "zipkin" {
		return base + "/zipkin/traces/" + id
	}
	return base + "/trace/" + id
}

// finish orders a trace's spans by start and sets its figures.
func finish(tr *Trace, startUs, endUs int64) {
	tr.Start = time.UnixMicro(startUs)
	tr.Millis = float64(endUs-startUs) / 1000
	slices.SortFunc(tr.Spans, func(a, b Span) int { return cmp.Compare(a.StartMs, b.StartMs) })
	if len(tr.Spans) > 0 {
		tr.Root = tr.Spans[0].Service + " " + tr.Spans[0].Name
	}
	for i := range tr.Spans {
		tr.Spans[i].StartMs -= float64(startUs) / 1000
		if tr.Spans[i].Error {
			tr.Error = true
		}
	}
}

func decodeJaeger(res *http.Response) ([]Trace, error) {
	var body struct {
		Data []struct {
			TraceID string `json:"traceID"`
			Spans   []struct {
				SpanID     string `json:"spanID"`
				Operation  string `json:"operationName"`
				References []struct {
					RefType string `json:"refType"`
					SpanID  string `json:"spanID"`
				} `json:"references"`
				StartTime int64 `json:"startTime"`
				Duration  int64 `json:"duration"`
				Tags      []struct {
					Key   string `json:"key"`
					Value any    `json:"value"`
				} `json:"tags"`
				ProcessID string `json:"processID"`
			} `json:"spans"`
			Processes map[string]struct {
				ServiceName string `json:"serviceName"`
			} `json:"processes"`
		} `json:"data"`
	}
	if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
		return nil, fmt.Errorf("jaeger's answer: %w", err)
	}
	var out []Trace
	for _, d := range body.Data {
		tr := Trace{ID: d.TraceID}
		start, end := int64(1<<62), int64(0)
		for _, s := range d.Spans {
			sp := Span{ID: s.SpanID, Service: d.Processes[s.ProcessID].ServiceName, Name: s.Operation,
				StartMs: float64(s.StartTime) / 1000, Millis: float64(s.Duration) / 1000, Tags: map[string]string{}}
			for _, r := range s.References {
				if r.RefType == "CHILD_OF" {
					sp.Parent = r.SpanID
				}
			}
			for _, tag := range s.Tags {
				v := fmt.Sprint(tag.Value)
				sp.Tags[tag.Key] = v
				if tag.Key == "error" && v != "false" || tag.Key == "otel.status_code" && v == "ERROR" {
					sp.Error = true
				}
			}
			start, end = min(start, s.StartTime), max(end, s.StartTime+s.Duration)
			tr.Spans = append(tr.Spans, sp)
		}
		finish(&tr, start, end)
		out = append(out, tr)
	}
	return out, nil
}

func decodeZipkin(res *http.Response) ([]Trace, error) {
	var body [][]struct {
		TraceID   string `json:"traceId"`
		ID        string `json:"id"`
		ParentID  string `json:"parentId"`
		Name      string `json:"name"`
		Timestamp int64  `json:"timestamp"`
		Duration  int64  `json:"duration"`
		Local     struct {
			ServiceName string `json:"serviceName"`
		} `json:"localEndpoint"`
		Tags map[string]string `json:"tags"`
	}
	if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
		return nil, fmt.Errorf("zipkin's answer: %w", err)
	}
	var out []Trace
	for _, spans := range body {
		if len(spans) == 0 {
			continue
		}
		tr := Trace{ID: spans[0].TraceID}
		start, end := int64(1<<62), int64(0)
		for _, s := range spans {
			_, failed := s.Tags["error"]
			tr.Spans = append(tr.Spans, Span{ID: s.ID, Parent: s.ParentID, Service: s.Local.ServiceName, Name: s.Name,
				StartMs: float64(s.Timestamp) / 1000, Millis: float64(s.Duration) / 1000, Error: failed, Tags: s.Tags})
			start, end = min(start, s.Timestamp), max(end, s.Timestamp+s.Duration)
		}
		finish(&tr, start, end)
		out = append(out, tr)
	}
	return out, nil
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
	f := Found{Backend: d.v.cfg.Traces.API, Slowest: []Trace{}, Failed: []Trace{}}
	slices.SortFunc(all, func(a, b Trace) int { return cmp.Compare(b.Millis, a.Millis) })
	for _, tr := range all {
		if tr.Error && len(f.Failed) < 10 {
			f.Failed = append(f.Failed, tr)
		}
	}
	f.Slowest = all[:min(10, len(all))]
	writeJSON(w, f)
}
