package figures_test

import (
	"math"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	oteltrace "go.opentelemetry.io/otel/trace"

	"github.com/meshrpc/mesh/internal/figures"
	"github.com/meshrpc/mesh/internal/golden"
)

func TestQuantileInterpolatesWithinItsBucket(t *testing.T) {
	b := func(counts map[int]uint64) []uint64 {
		out := make([]uint64, len(golden.Buckets)+1)
		for i, n := range counts {
			out[i] = n
		}
		return out
	}
	i10ms := 6 // golden.Buckets[6] = 0.01
	for _, tc := range []struct {
		name string
		w    figures.Window
		q    float64
		want float64
	}{
		{"all in (5ms, 10ms]: the median halfway", figures.Window{Buckets: b(map[int]uint64{i10ms: 100})}, 0.5, 0.0075},
		{"99 fast, 1 slow: p99 at the top of the fast bucket", figures.Window{Buckets: b(map[int]uint64{0: 99, 10: 1})}, 0.99, 0.0001},
		{"past the largest bound: the largest bound", figures.Window{Buckets: b(map[int]uint64{len(golden.Buckets): 10})}, 0.5, 10},
		{"first bucket from 0", figures.Window{Buckets: b(map[int]uint64{0: 4})}, 0.25, 0.000025},
	} {
		if got := tc.w.Quantile(tc.q); math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("%s: Quantile(%v) = %v, want %v", tc.name, tc.q, got, tc.want)
		}
	}
	if !math.IsNaN((figures.Window{}).Quantile(0.5)) {
		t.Error("the quantile of no calls is a number")
	}
}

// Each step keeps what the counters did since the last: calls per second,
// success rate and p99 over a span agree with the calls made in it.
func TestHistoryKeepsWhatChangedEachStep(t *testing.T) {
	edges := golden.New(prometheus.NewRegistry(), golden.Caps{}, []string{"authorize"})
	h := figures.New()
	now := time.Unix(1_700_000_000, 0)
	h.Add(now, edges.Snapshot())
	web := edges.Edge("web", "pay", "charge")
	cron := edges.Edge("cron", "pay", "refund")
	for step := range 6 {
		for range 90 {
			web.Done(golden.OK, 2*time.Millisecond, oteltrace.TraceID{})
		}
		for range 10 {
			web.Done(edges.Refused("authorize"), 50*time.Microsecond, oteltrace.TraceID{})
		}
		if step < 3 {
			cron.Done(golden.AppError, 200*time.Millisecond, oteltrace.TraceID{})
		}
		now = now.Add(figures.Step)
		h.Add(now, edges.Snapshot())
	}
	svc := h.Services(time.Minute)["pay"].Figures(60)
	if svc.Calls != 603 || math.Abs(svc.PerSecond-603.0/60) > 1e-9 {
		t.Errorf("pay over a minute: %d calls, %.2f/s; want 603", svc.Calls, svc.PerSecond)
	}
	if want := 543.0 / 603; math.Abs(svc.Success-want) > 1e-9 {
		t.Errorf("pay's success %v, want %v (refusals fail, application errors are answers)", svc.Success, want)
	}
	last := h.Services(20 * time.Second)["pay"]
	if last.Calls != 200 {
		t.Errorf("pay over the last two steps: %d calls, want 200", last.Calls)
	}
	e := h.Edges(time.Minute)
	if got := e[figures.Edge{Caller: "cron", Service: "pay", Method: "refund"}].Figures(60); got.Calls != 3 || got.P99 < 100 || got.P99 > 250 {
		t.Errorf("cron → pay refund: %+v, want 3 calls with p99 in (100, 250] ms", got)
	}
	if got := e[figures.Edge{Caller: "web", Service: "pay", Method: "charge"}].Figures(60); got.P50 <= 1 || got.P50 > 2.5 {
		t.Errorf("web → pay charge: p50 %v ms, want in (1, 2.5]", got.P50)
	}
	series := h.Series("pay", time.Minute)
	if len(series) != 6 || series[0].Window.Calls != 101 || series[5].Window.Calls != 100 {
		t.Errorf("pay's series: %d points, first %d calls, last %d; want 6, 101, 100", len(series), series[0].Window.Calls, series[len(series)-1].Window.Calls)
	}
	// Quiet edges go after EdgeKeep, quiet services after ServiceKeep.
	for range int(figures.EdgeKeep / figures.Step) {
		now = now.Add(figures.Step)
		h.Add(now, edges.Snapshot())
	}
	if n := len(h.Edges(figures.EdgeKeep)); n != 0 {
		t.Errorf("%d edges kept after 5 quiet minutes", n)
	}
	if _, ok := h.Services(time.Hour)["pay"]; !ok {
		t.Error("pay forgotten within the hour")
	}
	for range int(figures.ServiceKeep / figures.Step) {
		now = now.Add(figures.Step)
		h.Add(now, edges.Snapshot())
	}
	if n := len(h.Services(time.Hour)); n != 0 {
		t.Errorf("%d services kept after a quiet hour", n)
	}
}

// BenchmarkHourOfHistory measures what an hour of history costs a meshd
// at 1,000 services (3 callers × 2 methods each: 6,000 edges).
func BenchmarkHourOfHistory(b *testing.B) {
	for range b.N {
		edges := golden.New(prometheus.NewRegistry(), golden.Caps{}, nil)
		var es []*golden.Edge
		for s := range 1000 {
			for c := range 3 {
				for m := range 2 {
					es = append(es, edges.Edge("caller"+itoa(c), "service"+itoa(s), "method"+itoa(m)))
				}
			}
		}
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		h := figures.New()
		now := time.Unix(1_700_000_000, 0)
		start := time.Now()
		for range int(figures.ServiceKeep / figures.Step) {
			for _, e := range es {
				e.Done(golden.OK, time.Millisecond, oteltrace.TraceID{})
			}
			now = now.Add(figures.Step)
			h.Add(now, edges.Snapshot())
		}
		perStep := time.Since(start) / time.Duration(figures.ServiceKeep/figures.Step)
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "MiB-history")
		b.ReportMetric(float64(perStep.Microseconds())/1000, "ms/step")
		runtime.KeepAlive(h)
	}
}

func itoa(n int) string {
	return string(rune('a'+n%26)) + string(rune('a'+n/26%26)) + string(rune('a'+n/676%26))
}
