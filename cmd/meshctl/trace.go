package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/meshrpc/mesh/internal/tracequery"
)

// fetchTrace asks a Zipkin-compatible backend for a trace: Zipkin's
// /api/v2/trace/{id} first, then Jaeger's /api/traces/{id}.
func fetchTrace(ctx context.Context, base, id string) (tracequery.Trace, error) {
	tr, err := tracequery.Backend{API: tracequery.Zipkin, URL: base}.Get(ctx, id)
	if err == nil && len(tr.Spans) > 0 {
		return tr, nil
	}
	return tracequery.Backend{API: tracequery.Jaeger, URL: base}.Get(ctx, id)
}

// drawTrace prints the span tree: service, operation, kind, a duration bar
// on the trace's timeline, error marks and the routing tags of meshd hops.
func drawTrace(w io.Writer, tr tracequery.Trace) {
	spans := tr.Spans
	if len(spans) == 0 {
		fmt.Fprintf(w, "trace %s has no spans\n", tr.ID)
		return
	}
	known := map[string]bool{}
	for _, s := range spans {
		known[s.ID] = true
	}
	children := map[string][]tracequery.Span{}
	var roots []tracequery.Span
	for _, s := range spans { // ordered by start
		if s.Parent == "" || !known[s.Parent] {
			roots = append(roots, s)
		} else {
			children[s.Parent] = append(children[s.Parent], s)
		}
	}
	total := max(tr.Millis, 0.001)
	ms := func(v float64) time.Duration {
		return time.Duration(v * float64(time.Millisecond)).Round(time.Microsecond)
	}
	const width = 30
	fmt.Fprintf(w, "trace %s: %d spans, %v\n", tr.ID, len(spans), ms(total))
	var walk func(s tracequery.Span, depth int)
	walk = func(s tracequery.Span, depth int) {
		from := min(int(width*s.StartMs/total), width-1)
		n := max(int(width*s.Millis/total), 1)
		bar := strings.Repeat(" ", from) + strings.Repeat("█", min(n, width-from))
		mark := "  "
		if s.Error {
			mark = "✗ "
		}
		label := fmt.Sprintf("%s%s %s", strings.Repeat("  ", depth), s.Service, s.Name)
		if s.Kind != "" {
			label += " (" + s.Kind + ")"
		}
		fmt.Fprintf(w, "%s%-48s |%-*s| %v\n", mark, label, width, bar, ms(s.Millis))
		for _, k := range []string{"mesh.instance", "mesh.decision", "mesh.attempts", "mesh.result", "error"} {
			if v, ok := s.Tags[k]; ok && v != "" {
				fmt.Fprintf(w, "  %s    %s: %s\n", strings.Repeat("  ", depth), k, v)
			}
		}
		for _, k := range children[s.ID] {
			walk(k, depth+1)
		}
	}
	for _, r := range roots {
		walk(r, 0)
	}
}

func traceCmd(id, backend string, stdout, stderr io.Writer) int {
	if backend == "" {
		backend = os.Getenv("MESH_TRACES")
	}
	if backend == "" {
		backend = "http://127.0.0.1:16686"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tr, err := fetchTrace(ctx, backend, id)
	if err != nil {
		fmt.Fprintf(stderr, "meshctl trace: %v\n", err)
		return exitCallFailed
	}
	drawTrace(stdout, tr)
	return exitOK
}
