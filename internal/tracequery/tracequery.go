package tracequery

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

// The query APIs a Backend speaks.
const (
	Jaeger = "jaeger"
	Zipkin = "zipkin"
)

// Backend is a trace backend's query API.
type Backend struct {
	API    string       // Jaeger or Zipkin
	URL    string       // its base, e.g. http://127.0.0.1:16686
	Client *http.Client // nil: one with a 5 s timeout
}

// Trace is one trace, its spans ordered by start, their times relative to
// its start.
type Trace struct {
	ID     string    `json:"id"`
	Start  time.Time `json:"start"`
	Millis float64   `json:"ms"`
	Error  bool      `json:"error"`
	Root   string    `json:"root"` // the first span's service and name
	Link   string    `json:"link,omitempty"`
	Spans  []Span    `json:"spans"`
}

// Span is one span of a Trace.
type Span struct {
	ID      string            `json:"id"`
	Parent  string            `json:"parent,omitempty"`
	Service string            `json:"service"`
	Name    string            `json:"name"`
	Kind    string            `json:"kind,omitempty"` // client, server, ... in lower case
	StartMs float64           `json:"start_ms"`       // from the trace's start
	Millis  float64           `json:"ms"`
	Error   bool              `json:"error"`
	Tags    map[string]string `json:"tags,omitempty"`
}

// Query selects recent traces: those with a span of Service (named Name
// when not "") carrying every tag of Tags, within Lookback, at most Limit.
type Query struct {
	Service, Name string
	Tags          map[string]string
	Lookback      time.Duration
	Limit         int
}

// Get reads the trace id.
func (b Backend) Get(ctx context.Context, id string) (Trace, error) {
	var traces []Trace
	var err error
	if b.API == Zipkin {
		var spans []zipkinSpan
		if err = b.get(ctx, "/api/v2/trace/"+url.PathEscape(id), nil, &spans); err == nil {
			traces = zipkinTraces([][]zipkinSpan{spans})
		}
	} else {
		var body jaegerBody
		if err = b.get(ctx, "/api/traces/"+url.PathEscape(id), nil, &body); err == nil {
			traces = body.traces()
		}
	}
	if err != nil {
		return Trace{}, err
	}
	if len(traces) == 0 {
		return Trace{}, fmt.Errorf("trace %s not found at %s", id, b.URL)
	}
	traces[0].ID = cmp.Or(traces[0].ID, id)
	return traces[0], nil
}

// Search reads the traces q selects.
func (b Backend) Search(ctx context.Context, q Query) ([]Trace, error) {
	v := url.Values{}
	if b.API == Zipkin {
		v.Set("serviceName", q.Service)
		var tags []string
		for k, val := range q.Tags {
			tags = append(tags, k+"="+val)
		}
		slices.Sort(tags)
		if len(tags) > 0 {
			v.Set("annotationQuery", strings.Join(tags, " and "))
		}
		if q.Name != "" {
			v.Set("spanName", q.Name)
		}
		v.Set("limit", strconv.Itoa(q.Limit))
		v.Set("lookback", strconv.FormatInt(q.Lookback.Milliseconds(), 10))
		v.Set("endTs", strconv.FormatInt(time.Now().UnixMilli(), 10))
		var body [][]zipkinSpan
		if err := b.get(ctx, "/api/v2/traces", v, &body); err != nil {
			return nil, err
		}
		return zipkinTraces(body), nil
	}
	v.Set("service", q.Service)
	if len(q.Tags) > 0 {
		tags, _ := json.Marshal(q.Tags)
		v.Set("tags", string(tags))
	}
	if q.Name != "" {
		v.Set("operation", q.Name)
	}
	v.Set("limit", strconv.Itoa(q.Limit))
	v.Set("lookback", q.Lookback.String())
	var body jaegerBody
	if err := b.get(ctx, "/api/traces", v, &body); err != nil {
		return nil, err
	}
	return body.traces(), nil
}

func (b Backend) get(ctx context.Context, path string, q url.Values, into any) error {
	client := b.Client
	if client == nil {
		client = &http.Client{Timeout: 5 * time.Second}
	}
	u := strings.TrimRight(b.URL, "/") + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, "GET", u, nil)
	if err != nil {
		return err
	}
	res, err := client.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %s", u, res.Status)
	}
	if err := json.NewDecoder(res.Body).Decode(into); err != nil {
		return fmt.Errorf("%s's answer: %w", b.API, err)
	}
	return nil
}

// finish sets a trace's figures from its spans' starts and ends (unix
// microseconds, starts[i] is tr.Spans[i]'s), and orders its spans by
// start.
func finish(tr *Trace, starts []int64, endUs int64) {
	if len(starts) == 0 {
		return
	}
	startUs := slices.Min(starts)
	tr.Start = time.UnixMicro(startUs)
	tr.Millis = float64(endUs-startUs) / 1000
	for i := range tr.Spans {
		tr.Spans[i].StartMs = float64(starts[i]-startUs) / 1000
		tr.Error = tr.Error || tr.Spans[i].Error
	}
	slices.SortStableFunc(tr.Spans, func(a, b Span) int { return cmp.Compare(a.StartMs, b.StartMs) })
	tr.Root = tr.Spans[0].Service + " " + tr.Spans[0].Name
}

// jaegerBody is the answer of Jaeger's /api/traces, by id or search.
type jaegerBody struct {
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

func (body jaegerBody) traces() []Trace {
	var out []Trace
	for _, d := range body.Data {
		tr := Trace{ID: d.TraceID}
		var starts []int64
		var end int64
		for _, s := range d.Spans {
			sp := Span{ID: s.SpanID, Service: d.Processes[s.ProcessID].ServiceName, Name: s.Operation,
				Millis: float64(s.Duration) / 1000, Tags: map[string]string{}}
			for _, r := range s.References {
				if r.RefType == "CHILD_OF" {
					sp.Parent = r.SpanID
				}
			}
			for _, tag := range s.Tags {
				v := fmt.Sprint(tag.Value)
				sp.Tags[tag.Key] = v
				switch {
				case tag.Key == "span.kind":
					sp.Kind = v
				case tag.Key == "error" && v != "false", tag.Key == "otel.status_code" && v == "ERROR":
					sp.Error = true
				}
			}
			starts, end = append(starts, s.StartTime), max(end, s.StartTime+s.Duration)
			tr.Spans = append(tr.Spans, sp)
		}
		finish(&tr, starts, end)
		out = append(out, tr)
	}
	return out
}

// zipkinSpan is a span of Zipkin's v2 JSON.
type zipkinSpan struct {
	TraceID   string `json:"traceId"`
	ID        string `json:"id"`
	ParentID  string `json:"parentId"`
	Name      string `json:"name"`
	Kind      string `json:"kind"`
	Timestamp int64  `json:"timestamp"`
	Duration  int64  `json:"duration"`
	Local     struct {
		ServiceName string `json:"serviceName"`
	} `json:"localEndpoint"`
	Tags map[string]string `json:"tags"`
}

func zipkinTraces(body [][]zipkinSpan) []Trace {
	var out []Trace
	for _, spans := range body {
		if len(spans) == 0 {
			continue
		}
		tr := Trace{ID: spans[0].TraceID}
		var starts []int64
		var end int64
		for _, s := range spans {
			_, failed := s.Tags["error"]
			tr.Spans = append(tr.Spans, Span{ID: s.ID, Parent: s.ParentID, Service: s.Local.ServiceName, Name: s.Name,
				Kind: strings.ToLower(s.Kind), Millis: float64(s.Duration) / 1000, Error: failed, Tags: s.Tags})
			starts, end = append(starts, s.Timestamp), max(end, s.Timestamp+s.Duration)
		}
		finish(&tr, starts, end)
		out = append(out, tr)
	}
	return out
}
