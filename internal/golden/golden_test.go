package golden_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	oteltrace "go.opentelemetry.io/otel/trace"

	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/golden"
)

func TestAnswer(t *testing.T) {
	for _, tc := range []struct {
		code   frame.ErrCode
		appErr bool
		want   string
	}{
		{0, false, "ok"},
		{0, true, "app_error"},
		{frame.ErrCodeTimeout, false, "timeout"},
		{frame.ErrCodeCancelled, false, "cancelled"},
		{frame.ErrCodeBusy, false, "busy"},
		{frame.ErrCodeDeclined, false, "declined"},
		{frame.ErrCodeUnexpected, false, "unexpected"},
		{frame.ErrCodeBadRequest, false, "bad_request"},
		{frame.ErrCodeNetwork, false, "network"},
		{frame.ErrCodeUnhealthy, false, "unhealthy"},
		{0x42, false, "other_error"},
	} {
		e := golden.New(prometheus.NewRegistry(), golden.Caps{}, nil)
		if got := e.String(golden.Answer(tc.code, tc.appErr)); got != tc.want {
			t.Errorf("Answer(%v, %v) = %s, want %s", tc.code, tc.appErr, got, tc.want)
		}
	}
}

func TestRefusalsByStage(t *testing.T) {
	e := golden.New(prometheus.NewRegistry(), golden.Caps{}, []string{"authorize", "conn_limit"})
	for stage, want := range map[string]string{"authorize": "refused_authorize", "conn_limit": "refused_conn_limit", "nosuch": "refused_other"} {
		r := e.Refused(stage)
		if got := e.String(r); got != want {
			t.Errorf("Refused(%s) = %s, want %s", stage, got, want)
		}
		if s, ok := e.Stage(r); ok != (stage != "nosuch") || ok && s != stage {
			t.Errorf("Stage(Refused(%s)) = %s, %v", stage, s, ok)
		}
	}
}

// counts reads mesh_calls_total as "caller service method result" → count.
func counts(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "mesh_calls_total" {
			continue
		}
		for _, m := range mf.Metric {
			l := map[string]string{}
			for _, p := range m.Label {
				l[p.GetName()] = p.GetValue()
			}
			out[l["caller"]+" "+l["service"]+" "+l["method"]+" "+l["result"]] += m.Counter.GetValue()
		}
	}
	return out
}

func TestCapsCountTheRestAsOther(t *testing.T) {
	for _, tc := range []struct {
		name  string
		caps  golden.Caps
		calls [][3]string // caller, service, method
		want  map[string]float64
		over  string
	}{
		{"callers", golden.Caps{Callers: 2}, [][3]string{{"a", "s", "m"}, {"b", "s", "m"}, {"c", "s", "m"}, {"d", "s", "m"}},
			map[string]float64{"a s m ok": 1, "b s m ok": 1, "_other s m ok": 2}, "caller"},
		{"services", golden.Caps{Services: 1}, [][3]string{{"a", "s", "m"}, {"a", "t", "m"}, {"a", "u", "n"}},
			map[string]float64{"a s m ok": 1, "a _other _other ok": 2}, "service"},
		{"methods", golden.Caps{MethodsPerService: 2}, [][3]string{{"a", "s", "m1"}, {"a", "s", "m2"}, {"a", "s", "m3"}, {"a", "t", "m3"}},
			map[string]float64{"a s m1 ok": 1, "a s m2 ok": 1, "a s _other ok": 1, "a t m3 ok": 1}, "method"},
		{"edges", golden.Caps{Edges: 2}, [][3]string{{"a", "s", "m1"}, {"a", "s", "m2"}, {"a", "s", "m3"}, {"b", "t", "m"}},
			map[string]float64{"a s m1 ok": 1, "a s m2 ok": 1, "_other _other _other ok": 2}, "edge"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			e := golden.New(reg, tc.caps, nil)
			for _, c := range tc.calls {
				e.Edge(c[0], c[1], c[2]).Done(golden.OK, time.Millisecond, oteltrace.TraceID{})
			}
			got := counts(t, reg)
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("counted %v, want %v", got, tc.want)
			}
			if n := overflow(t, reg, tc.over); n == 0 {
				t.Errorf("mesh_metrics_overflow_total{label=%q} is 0", tc.over)
			}
		})
	}
}

// overflow reads mesh_metrics_overflow_total{label}.
func overflow(t *testing.T, reg *prometheus.Registry, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "mesh_metrics_overflow_total" {
			continue
		}
		for _, m := range mf.Metric {
			if m.Label[0].GetValue() == label {
				return m.Counter.GetValue()
			}
		}
	}
	return 0
}

func TestAKnownEdgeCostsNoAllocation(t *testing.T) {
	e := golden.New(prometheus.NewRegistry(), golden.Caps{}, []string{"authorize"})
	caller, service, method := "caller", "svc", "Echo::echo"
	e.Edge(caller, service, method).Done(golden.OK, time.Millisecond, oteltrace.TraceID{})
	if n := testing.AllocsPerRun(1000, func() {
		e.Edge(caller, service, method).Done(golden.OK, 300*time.Microsecond, oteltrace.TraceID{})
	}); n != 0 {
		t.Errorf("%v allocations per call on a known edge, want 0", n)
	}
}

func TestSampledCallsLeaveExemplars(t *testing.T) {
	for _, tc := range []struct{ id, want string }{
		{"00000000000000000000000000000abc", "0000000000000abc"},                 // 64 bits, as backends show them
		{"5b8efff798038103d269b633813fc60c", "5b8efff798038103d269b633813fc60c"}, // 128 bits
	} {
		reg := prometheus.NewRegistry()
		e := golden.New(reg, golden.Caps{}, nil)
		tid, _ := oteltrace.TraceIDFromHex(tc.id)
		e.Edge("a", "s", "m").Done(golden.OK, 3*time.Millisecond, tid)
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, mf := range mfs {
			if mf.GetName() == "mesh_call_duration_seconds" {
				for _, b := range mf.Metric[0].Histogram.Bucket {
					for _, l := range b.GetExemplar().GetLabel() {
						got = append(got, l.GetName()+"="+l.GetValue())
					}
				}
			}
		}
		if len(got) != 1 || got[0] != "trace_id="+tc.want {
			t.Errorf("trace %s: exemplars %v, want trace_id=%s", tc.id, got, tc.want)
		}
	}
}

func BenchmarkEdgeDone(b *testing.B) {
	e := golden.New(prometheus.NewRegistry(), golden.Caps{}, nil)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			e.Edge("caller", "svc", "Echo::echo").Done(golden.OK, 300*time.Microsecond, oteltrace.TraceID{})
		}
	})
}

// A method off the wire can be any bytes; Prometheus takes only UTF-8
// label values (client_golang panics on others), so they are mended.
func TestLabelsAreValidUTF8(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := golden.New(reg, golden.Caps{}, nil)
	e.Edge("web\xff", "svc", "\x80\x00\x00\x00").Done(golden.OK, time.Millisecond, oteltrace.TraceID{})
	got := counts(t, reg)
	if got["web\uFFFD svc \uFFFD\x00\x00\x00 ok"] != 1 {
		t.Fatalf("counted %v", got)
	}
}
