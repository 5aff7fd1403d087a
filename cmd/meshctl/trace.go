package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"
)

// span is one span as meshctl draws it, from either backend's API.
type span struct {
	ID, Parent, Service, Name, Kind string
	Start, Duration                 time.Duration // start relative to the trace's first span
	Error                           bool
	Tags                            map[string]string
}

// fetchSpans asks a Zipkin-compatible backend for a trace: Zipkin's
// /api/v2/trace/{id} first, then Jaeger's /api/traces/{id}.
func fetchSpans(ctx context.Context, base, id string) ([]span, error) {
	base = strings.TrimRight(base, "/")
	if spans, err := fetchZipkin(ctx, base, id); err == nil && len(spans) > 0 {
		return spans, nil
	}
	return fetchJaeger(ctx, base, id)
}

func getJSON(ctx context.Context, url string, v any) error {
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func fetchZipkin(ctx context.Context, base, id string) ([]span, error) {
	var in []struct {
		ID            string                       `json:"id"`
		ParentID      string                       `json:"parentId"`
		Name          string                       `json:"name"`
		Kind          string                       `json:"kind"`
		Timestamp     int64                        `json:"timestamp"`
		Duration      int64                        `json:"duration"`
		LocalEndpoint struct{ ServiceName string } `json:"localEndpoint"`
		Tags          map[string]string            `json:"tags"`
	}
	if err := getJSON(ctx, base+"/api/v2/trace/"+id, &in); err != nil {
		return nil, err
	}
	var out []span
	for _, s := range in {
		_, isErr := s.Tags["error"]
		out = append(out, span{ID: s.ID, Parent: s.ParentID, Service: s.LocalEndpoint.ServiceName, Name: s.Name,
			Kind: strings.ToLower(s.Kind), Start: time.Duration(s.Timestamp) * time.Microsecond,
			Duration: time.Duration(s.Duration) * time.Microsecond, Error: isErr, Tags: s.Tags})
	}
	return out, nil
}

func fetchJaeger(ctx context.Context, base, id string) ([]span, error) {
	var body struct {
		Data []struct {
			Spans []struct {
				SpanID        string `json:"spanID"`
				OperationName string `json:"operationName"`
				References    []struct{ RefType, SpanID string }
				StartTime     int64 `json:"startTime"`
				Duration      int64 `json:"duration"`
				ProcessID     string
				Tags          []struct {
					Key   string
					Value any
				}
			} `json:"spans"`
			Processes map[string]struct{ ServiceName string } `json:"processes"`
		} `json:"data"`
	}
	if err := getJSON(ctx, base+"/api/traces/"+id, &body); err != nil {
		return nil, err
	}
	if len(body.Data) == 0 {
		return nil, fmt.Errorf("trace %s not found", id)
	}
	var out []span
	for _, s := range body.Data[0].Spans {
		sp := span{ID: s.SpanID, Name: s.OperationName, Service: body.Data[0].Processes[s.ProcessID].ServiceName,
			Start: time.Duration(s.StartTime) * time.Microsecond, Duration: time.Duration(s.Duration) * time.Microsecond,
			Tags: map[string]string{}}
		for _, r := range s.References {
			if r.RefType == "CHILD_OF" {
				sp.Parent = r.SpanID
			}
		}
		for _, t := range s.Tags {
			v := fmt.Sprint(t.Value)
			sp.Tags[t.Key] = v
			switch t.Key {
			case "span.kind":
				sp.Kind = v
			case "error":
				sp.Error = v != "false"
			}
		}
		out = append(out, sp)
	}
	return out, nil
}

// drawTrace prints the span tree: service, operation, kind, a duration bar
// on the trace's timeline, error marks and the routing tags of meshd hops.
func drawTrace(w io.Writer, id string, spans []span) {
	if len(spans) == 0 {
		fmt.Fprintf(w, "trace %s has no spans\n", id)
		return
	}
	begin, end := spans[0].Start, spans[0].Start+spans[0].Duration
	known := map[string]bool{}
	for _, s := range spans {
		begin, end = min(begin, s.Start), max(end, s.Start+s.Duration)
		known[s.ID] = true
	}
	children := map[string][]span{}
	var roots []span
	for _, s := range spans {
		if s.Parent == "" || !known[s.Parent] {
			roots = append(roots, s)
		} else {
			children[s.Parent] = append(children[s.Parent], s)
		}
	}
	byStart := func(a, b span) int { return int(a.Start - b.Start) }
	slices.SortFunc(roots, byStart)
	total := max(end-begin, time.Microsecond)
	const width = 30
	fmt.Fprintf(w, "trace %s: %d spans, %v\n", id, len(spans), total.Round(time.Microsecond))
	var walk func(s span, depth int)
	walk = func(s span, depth int) {
		from := int(int64(width) * int64(s.Start-begin) / int64(total))
		n := max(int(int64(width)*int64(s.Duration)/int64(total)), 1)
		bar := strings.Repeat(" ", from) + strings.Repeat("█", min(n, width-from))
		mark := "  "
		if s.Error {
			mark = "✗ "
		}
		label := fmt.Sprintf("%s%s %s", strings.Repeat("  ", depth), s.Service, s.Name)
		if s.Kind != "" {
			label += " (" + s.Kind + ")"
		}
		fmt.Fprintf(w, "%s%-48s |%-*s| %v\n", mark, label, width, bar, s.Duration.Round(time.Microsecond))
		for _, k := range []string{"mesh.instance", "mesh.decision", "mesh.attempts", "mesh.result", "error"} {
			if v, ok := s.Tags[k]; ok && v != "" {
				fmt.Fprintf(w, "  %s    %s: %s\n", strings.Repeat("  ", depth), k, v)
			}
		}
		kids := children[s.ID]
		slices.SortFunc(kids, byStart)
		for _, k := range kids {
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
	spans, err := fetchSpans(ctx, backend, id)
	if err != nil {
		fmt.Fprintf(stderr, "meshctl trace: %v\n", err)
		return exitCallFailed
	}
	drawTrace(stdout, id, spans)
	return exitOK
}
