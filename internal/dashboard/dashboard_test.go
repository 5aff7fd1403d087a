package dashboard

import (
	"testing"
	"time"

	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/internal/figures"
	"github.com/meshrpc/mesh/internal/relay"
	"github.com/meshrpc/mesh/internal/routing"
)

func win(calls, answered uint64) figures.Window {
	b := make([]uint64, 17)
	b[5] = calls
	return figures.Window{Calls: calls, Answered: answered, Buckets: b}
}

// Reports add up: each call was counted by one meshd, so the mesh's
// figures are the sums; an instance's breaker is the worst any meshd
// holds; with every meshd answering, an instance no meshd serves has left.
func TestReportsAddUp(t *testing.T) {
	at := time.Unix(1_700_000_000, 0)
	a := Report{Meshd: "a", Seconds: 60,
		Services:  map[string]figures.Window{"pay": win(100, 99)},
		Edges:     []EdgeWindow{{figures.Edge{Caller: "web", Service: "pay", Method: "charge"}, win(100, 99)}},
		Series:    []figures.Point{{At: at, Window: win(10, 10)}},
		Instances: []discovery.Instance{{Service: "shop", ID: "shop-1", Addr: "a:1"}},
		Breakers:  []routing.Breaker{{Service: "pay", ID: "pay-1", Addr: "b:1", State: "open"}, {Service: "pay", ID: "pay-old", Addr: "c:1", State: "closed"}}}
	b := Report{Meshd: "b", Seconds: 30,
		Services:  map[string]figures.Window{"pay": win(50, 40)},
		Edges:     []EdgeWindow{{figures.Edge{Caller: "web", Service: "pay", Method: "charge"}, win(50, 40)}},
		Series:    []figures.Point{{At: at.Add(3 * time.Second), Window: win(5, 4)}},
		Instances: []discovery.Instance{{Service: "pay", ID: "pay-1", Addr: "b:1"}},
		Breakers:  []routing.Breaker{{Service: "pay", ID: "pay-1", Addr: "b:1", State: "half_open"}}}
	m := addUp([]Report{a, b}, true)
	if w := m.services["pay"]; w.Calls != 150 || w.Answered != 139 {
		t.Errorf("pay: %+v, want 150 calls, 139 answered", w)
	}
	if w := m.edges[figures.Edge{Caller: "web", Service: "pay", Method: "charge"}]; w.Calls != 150 {
		t.Errorf("web → pay: %d calls", w.Calls)
	}
	if len(m.series) != 1 { // the same 10 s step on both
		t.Errorf("%d steps, want 1", len(m.series))
	}
	if got := m.instances["pay"]; len(got) != 1 || got[0].ID != "pay-1" || got[0].Breaker != "open" || got[0].Open != 1 || !got[0].Serve {
		t.Errorf("pay's instances: %+v (pay-old, served by no meshd, has left)", got)
	}
	if m.covered(5*time.Minute) != 60 {
		t.Errorf("covered %v, want the oldest history's 60 s", m.covered(5*time.Minute))
	}
	b.Error = "timeout"
	m = addUp([]Report{a, b}, true)
	if got := m.instances["pay"]; len(got) != 2 || m.meshds[1].OK {
		t.Errorf("with b silent, pay's instances %+v and meshds %+v: an instance b may serve stays", got, m.meshds)
	}
}

func TestTailFilter(t *testing.T) {
	ok := relay.Explanation{Service: "pay", Method: "charge", Caller: "web", Outcome: "ok", Millis: 3}
	slowOK := relay.Explanation{Service: "pay", Method: "charge", Caller: "web", Outcome: "ok", Millis: 300}
	failed := relay.Explanation{Service: "pay", Method: "refund", Caller: "cron", Outcome: "timeout", Millis: 1000}
	appErr := relay.Explanation{Service: "pay", Method: "refund", Caller: "cron", Outcome: "app_error", Millis: 2}
	for _, tc := range []struct {
		name string
		f    TailFilter
		want []bool // ok, slowOK, failed, appErr
	}{
		{"all", TailFilter{}, []bool{true, true, true, true}},
		{"failed", TailFilter{Failed: true}, []bool{false, false, true, false}},
		{"slow", TailFilter{SlowMs: 100}, []bool{false, true, true, false}},
		{"failed or slow", TailFilter{Failed: true, SlowMs: 100}, []bool{false, true, true, false}},
		{"caller", TailFilter{Caller: "cron"}, []bool{false, false, true, true}},
		{"method", TailFilter{Method: "charge"}, []bool{true, true, false, false}},
		{"result", TailFilter{Outcome: "app_error"}, []bool{false, false, false, true}},
		{"service", TailFilter{Service: "shop"}, []bool{false, false, false, false}},
	} {
		for i, e := range []relay.Explanation{ok, slowOK, failed, appErr} {
			if got := tc.f.Keep(e); got != tc.want[i] {
				t.Errorf("%s: Keep(%s %s %.0fms) = %v", tc.name, e.Method, e.Outcome, e.Millis, got)
			}
		}
	}
}
