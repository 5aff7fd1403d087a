package zipkintest

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/openzipkin/zipkin-go/proto/zipkin_proto3"
)

// Span is what tests read of a posted span.
type Span struct {
	TraceID  string `json:"traceId"`
	ID       string `json:"id"`
	ParentID string `json:"parentId"`
	Kind     string `json:"kind"`
	Name     string `json:"name"`
	Local    struct {
		ServiceName string `json:"serviceName"`
	} `json:"localEndpoint"`
	Tags      map[string]string `json:"tags"`
	Timestamp int64             `json:"timestamp"` // microseconds
	Duration  int64             `json:"duration"`  // microseconds
}

// Sink is a Zipkin v2 endpoint at URL (…/api/v2/spans) that accepts every
// batch and keeps its spans; a batch that is neither a JSON array of spans
// nor (as Content-Type application/x-protobuf) a zipkin.proto ListOfSpans
// fails the test.
type Sink struct {
	URL string

	mu    sync.Mutex
	spans []Span
}

// New starts a Sink, stopped when the test ends.
func New(t testing.TB) *Sink {
	s := &Sink{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.URL.Path == "/api/v2/traces" {
			s.traces(w, r)
			return
		}
		if r.Method == http.MethodGet {
			if id, ok := strings.CutPrefix(r.URL.Path, "/api/v2/trace/"); ok {
				s.trace(w, id)
				return
			}
			http.NotFound(w, r) // not Zipkin's API
			return
		}
		body, _ := io.ReadAll(r.Body)
		batch, err := decode(r.Header.Get("Content-Type"), body)
		if err != nil {
			t.Errorf("zipkin sink: %v", err)
		}
		s.mu.Lock()
		s.spans = append(s.spans, batch...)
		s.mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(srv.Close)
	s.URL = srv.URL + "/api/v2/spans"
	return s
}

// Spans returns the spans received so far that match keep (all when nil).
func (s *Sink) Spans(keep func(Span) bool) []Span {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Span
	for _, sp := range s.spans {
		if keep == nil || keep(sp) {
			out = append(out, sp)
		}
	}
	return out
}

func decode(contentType string, body []byte) ([]Span, error) {
	var batch []Span
	if contentType != "application/x-protobuf" {
		err := json.Unmarshal(body, &batch)
		return batch, err
	}
	models, err := zipkin_proto3.ParseSpans(body, false)
	for _, m := range models {
		sp := Span{TraceID: m.TraceID.String(), ID: m.ID.String(), Kind: string(m.Kind), Name: m.Name, Tags: m.Tags,
			Timestamp: m.Timestamp.UnixMicro(), Duration: m.Duration.Microseconds()}
		if m.ParentID != nil {
			sp.ParentID = m.ParentID.String()
		}
		if m.Kind == "SPAN_KIND_UNSPECIFIED" {
			sp.Kind = ""
		}
		if m.LocalEndpoint != nil {
			sp.Local.ServiceName = m.LocalEndpoint.ServiceName
		}
		batch = append(batch, sp)
	}
	return batch, err
}

// traces answers Zipkin's trace search (GET /api/v2/traces) from the spans
// received: the traces with a span of serviceName whose tags hold
// annotationQuery's key=value (and named spanName, when given), up to
// limit, each a list of its spans.
func (s *Sink) traces(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	key, value, _ := strings.Cut(q.Get("annotationQuery"), "=")
	limit, err := strconv.Atoi(q.Get("limit"))
	if err != nil || limit <= 0 {
		limit = 10
	}
	s.mu.Lock()
	byTrace := map[string][]Span{}
	var order []string
	for _, sp := range s.spans {
		if byTrace[sp.TraceID] == nil {
			order = append(order, sp.TraceID)
		}
		byTrace[sp.TraceID] = append(byTrace[sp.TraceID], sp)
	}
	s.mu.Unlock()
	out := [][]Span{}
	for _, id := range order {
		match := slices.ContainsFunc(byTrace[id], func(sp Span) bool {
			return (q.Get("serviceName") == "" || sp.Local.ServiceName == q.Get("serviceName")) &&
				(key == "" || sp.Tags[key] == value) && (q.Get("spanName") == "" || sp.Name == q.Get("spanName"))
		})
		if match && len(out) < limit {
			out = append(out, byTrace[id])
		}
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(out)
}

// trace answers Zipkin's GET /api/v2/trace/{id}: the trace's spans, or
// 404.
func (s *Sink) trace(w http.ResponseWriter, id string) {
	spans := s.Spans(func(sp Span) bool { return sp.TraceID == id })
	if len(spans) == 0 {
		http.Error(w, "trace not found", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(spans)
}

// QueryURL is the base of the Sink's query API (for a dashboard).
func (s *Sink) QueryURL() string { return strings.TrimSuffix(s.URL, "/api/v2/spans") }
