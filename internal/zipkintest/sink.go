package zipkintest

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
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
	Tags map[string]string `json:"tags"`
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
		sp := Span{TraceID: m.TraceID.String(), ID: m.ID.String(), Kind: string(m.Kind), Name: m.Name, Tags: m.Tags}
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
