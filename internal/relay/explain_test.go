package relay

import (
	"strings"
	"testing"
	"time"

	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/routing"
	"github.com/meshrpc/mesh/internal/testkit"
)

// A recorded call explains itself: who called, each attempt's instance, why
// it was picked and how it ended, and a refusal's stage.
func TestExplanationOfRecordedCall(t *testing.T) {
	reg := discovery.NewLocal()
	r := New(Config{Self: "self:1", Registry: reg, Logger: testkit.Quiet})
	for _, id := range []string{"kv-1", "kv-2"} {
		reg.Register(t.Context(), discovery.Instance{Service: "kv", ID: id, Addr: "10.0.0.1:21300"})
	}
	pick := routing.Pipeline{routing.Discover{From: reg}, r.bal}
	var c routing.Call
	c.Reset("kv", nil)
	rec := record{service: "kv"}
	rec.caller = "billing"
	for i, o := range []routing.Outcome{routing.Failed(frame.ErrCodeBusy), {}} {
		if err := pick.Route(&c); err != nil {
			t.Fatal(err)
		}
		r.bal.Send(&c).Done(o)
		rec.add(c.Instance(), c.Choice())
		rec.end(o, time.Duration(i+1)*time.Millisecond)
	}
	e := rec.explain(nil)
	if e.Caller != "billing" || len(e.Attempts) != 2 || e.Result != "ok" || e.Attempts[0].Instance == e.Attempts[1].Instance {
		t.Fatalf("explanation = %+v", e)
	}
	if a := e.Attempts[0]; a.Result != "busy" || a.Millis != 1 || !strings.HasPrefix(a.Why, "power of two choices") || !strings.Contains(a.Why, "(2 instances)") {
		t.Fatalf("first attempt = %+v", a)
	}
	if a := e.Attempts[1]; !strings.HasPrefix(a.Why, "retry: power of two choices") || !strings.Contains(a.Why, "the only usable instance") {
		t.Fatalf("second attempt = %+v", a)
	}
	refused := record{service: "kv", stage: "kill_switch", refused: "calls from x to kv are blocked", code: frame.ErrCodeDeclined}
	if e := refused.explain(nil); e.Stage != "kill_switch" || e.Result != "refused: declined" || len(e.Attempts) != 0 {
		t.Fatalf("refusal = %+v", e)
	}
}

// The ring keeps the last 1,024 calls, newest first, filtered by service
// and span id.
func TestRecentCalls(t *testing.T) {
	r := New(Config{Registry: discovery.NewLocal(), Logger: testkit.Quiet})
	for i := range 1500 {
		svc := "a"
		if i%2 == 1 {
			svc = "b"
		}
		r.recent.add(&record{service: svc, spanID: uint64(i + 1)})
	}
	if all := r.Recent("", 0, 5000); len(all) != 1024 || all[0].SpanID != "00000000000005dc" {
		t.Fatalf("%d recent, newest %v", len(all), all[0].SpanID)
	}
	if b := r.Recent("b", 0, 3); len(b) != 3 || b[0].Service != "b" || b[0].SpanID != "00000000000005dc" {
		t.Fatalf("service b: %+v", b)
	}
	if one := r.Recent("", 1499, 10); len(one) != 1 || one[0].Service != "a" {
		t.Fatalf("span 1499: %+v", one)
	}
}
