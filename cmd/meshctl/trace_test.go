package main

import (
	"bytes"
	"net/http"
	"strings"
	"testing"

	"github.com/meshrpc/mesh/internal/zipkintest"
)

// meshctl trace reads Zipkin's API (a Zipkin sink's) and draws the tree with error marks.
func TestTraceFromZipkinAPI(t *testing.T) {
	sink := zipkintest.New(t)
	res, err := http.Post(sink.URL, "application/json", strings.NewReader(`[
 {"traceId":"abc","id":"1","name":"get","kind":"CLIENT","timestamp":1000,"duration":900,"localEndpoint":{"serviceName":"web"}},
 {"traceId":"abc","id":"2","parentId":"1","name":"get","kind":"SERVER","timestamp":1100,"duration":700,"localEndpoint":{"serviceName":"meshd"},
  "tags":{"mesh.decision":"power of two choices","mesh.instance":"kv#1"}},
 {"traceId":"abc","id":"3","parentId":"2","name":"get","kind":"SERVER","timestamp":1200,"duration":400,"localEndpoint":{"serviceName":"kv"},"tags":{"error":"busy"}}
]`))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	srv := struct{ URL string }{sink.QueryURL()}
	var out, errb bytes.Buffer
	if code := run([]string{"trace", "abc", "--traces", srv.URL}, nil, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	got := out.String()
	for _, want := range []string{"trace abc: 3 spans", "  web get (client)", "    meshd get (server)", "✗     kv get (server)", "mesh.decision: power of two choices", "error: busy"} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	if code := run([]string{"trace", "nope", "--traces", srv.URL}, nil, &out, &errb); code == 0 {
		t.Fatal("a missing trace exited 0")
	}
}
