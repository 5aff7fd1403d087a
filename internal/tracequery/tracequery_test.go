package tracequery

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/meshrpc/mesh/internal/zipkintest"
)

// post sends spans to a Zipkin sink as Zipkin's v2 JSON.
func post(t *testing.T, url string, spans ...map[string]any) {
	t.Helper()
	body, _ := json.Marshal(spans)
	res, err := http.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
}

func zspan(trace, id, parent, service, name string, startUs, us int64, tags map[string]string) map[string]any {
	return map[string]any{"traceId": trace, "id": id, "parentId": parent, "name": name, "kind": "SERVER",
		"timestamp": startUs, "duration": us, "localEndpoint": map[string]string{"serviceName": service}, "tags": tags}
}

func TestZipkinGetAndSearch(t *testing.T) {
	sink := zipkintest.New(t)
	post(t, sink.URL,
		zspan("00000000000000a1", "1", "", "meshd", "echo", 1_000_000, 500, map[string]string{"mesh.service": "svc"}),
		zspan("00000000000000a1", "2", "1", "svc", "echo", 1_000_100, 300, map[string]string{"error": "busy"}),
		zspan("00000000000000b2", "3", "", "meshd", "get", 2_000_000, 100, map[string]string{"mesh.service": "kv"}),
	)
	b := Backend{API: Zipkin, URL: sink.QueryURL()}
	tr, err := b.Get(context.Background(), "00000000000000a1")
	if err != nil {
		t.Fatal(err)
	}
	if len(tr.Spans) != 2 || tr.Millis != 0.5 || !tr.Error || tr.Root != "meshd echo" ||
		tr.Spans[1].StartMs != 0.1 || tr.Spans[1].Parent != "1" || tr.Spans[1].Kind != "server" || !tr.Start.Equal(time.UnixMicro(1_000_000)) {
		t.Fatalf("trace a1: %+v", tr)
	}
	if _, err := b.Get(context.Background(), "00000000000000ff"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("a trace the backend lacks: %v", err)
	}
	found, err := b.Search(context.Background(), Query{Service: "meshd", Tags: map[string]string{"mesh.service": "kv"}, Lookback: time.Hour, Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != 1 || found[0].ID != "00000000000000b2" || found[0].Error {
		t.Fatalf("search for kv's traces: %+v", found)
	}
}

// Jaeger's answer, as its /api/traces gives it: spans point to their
// parents by reference, the service is the process's, the kind and an
// error are tags (OpenTelemetry's status too).
func TestJaegerDecoding(t *testing.T) {
	const answer = `{"data":[{"traceID":"c3","spans":[
	 {"traceID":"c3","spanID":"1","operationName":"echo","references":[],"startTime":5000000,"duration":2000,"processID":"p1",
	  "tags":[{"key":"span.kind","type":"string","value":"server"},{"key":"mesh.attempts","type":"int64","value":2}]},
	 {"traceID":"c3","spanID":"2","operationName":"echo","references":[{"refType":"CHILD_OF","traceID":"c3","spanID":"1"}],
	  "startTime":5000500,"duration":1000,"processID":"p2","tags":[{"key":"otel.status_code","type":"string","value":"ERROR"}]}],
	 "processes":{"p1":{"serviceName":"meshd","tags":[]},"p2":{"serviceName":"svc","tags":[]}}}],"total":0,"limit":0,"offset":0,"errors":null}`
	var path string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path = r.URL.Path
		w.Write([]byte(answer))
	}))
	defer srv.Close()
	tr, err := Backend{API: Jaeger, URL: srv.URL + "/"}.Get(context.Background(), "c3")
	if err != nil {
		t.Fatal(err)
	}
	if path != "/api/traces/c3" {
		t.Errorf("asked %s", path)
	}
	s0, s1 := tr.Spans[0], tr.Spans[1]
	if tr.Millis != 2 || !tr.Error || s0.Kind != "server" || s0.Tags["mesh.attempts"] != "2" || s0.Error ||
		s1.Parent != "1" || s1.Service != "svc" || !s1.Error || s1.StartMs != 0.5 {
		t.Fatalf("decoded %+v", tr)
	}
}
