package relay

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/conn"
	"github.com/meshrpc/mesh/internal/routing"
	"github.com/meshrpc/mesh/internal/testkit"
	"github.com/meshrpc/mesh/router"
)

func stageNames(p routing.Pipeline) []string {
	var out []string
	for _, s := range p {
		out = append(out, s.Name())
	}
	return out
}

// The pipelines run in the order pipeline.go declares, under the names
// explanations and metrics use.
func TestPipelineOrder(t *testing.T) {
	r := New(Config{Self: "self:1", Registry: discovery.NewLocal(), Logger: testkit.Quiet})
	for _, tc := range []struct {
		name string
		p    routing.Pipeline
		want []string
	}{
		{"first hop", r.firstHop, []string{"drain", "discover", "authorize", "kill_switch", "caller_limit", "balance", "connect", "admission"}},
		{"last hop", r.lastHop, []string{"drain", "deliver", "authorize", "admission"}},
		{"retry", r.retry, []string{"discover", "balance", "connect"}},
	} {
		if got := stageNames(tc.p); !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
	var prologue []string
	for _, e := range r.prologue {
		prologue = append(prologue, e.name)
	}
	if want := []string{"check", "conn_limit"}; !slices.Equal(prologue, want) {
		t.Errorf("prologue: %v, want %v", prologue, want)
	}
}

// Each refusing stage of the first hop refuses with its own code, and the
// relay records which stage it was.
func TestFirstHopRefusals(t *testing.T) {
	reg := discovery.NewLocal()
	r := New(Config{Self: "self:1", Registry: reg, Logger: testkit.Quiet, Policies: router.Policies{
		"blocked": {Blocked: []string{"*"}},
		"limited": {CallerRateLimit: 0.001},
		"full":    {MaxConcurrent: 1},
	}})
	app := new(conn.Conn)
	for _, svc := range []string{"blocked", "limited", "full", "gone"} {
		inst := discovery.Instance{Service: svc, ID: svc + "-1", Addr: "self:1"}
		reg.Register(context.Background(), inst)
		if svc != "gone" {
			r.AddLocal(inst, app)
		}
	}
	hold := new(routing.Call) // keeps full's one place
	hold.Reset("full", nil)
	if err := r.firstHop.Route(hold); err != nil {
		t.Fatal(err)
	}
	defer hold.Release()
	for _, tc := range []struct {
		service, stage string
		code           frame.ErrCode
	}{
		{"blocked", "kill_switch", frame.ErrCodeDeclined},
		{"limited", "", 0}, // the first call is within the burst
		{"limited", "caller_limit", frame.ErrCodeBusy},
		{"nosuch", "discover", frame.ErrCodeDeclined},
		{"gone", "connect", frame.ErrCodeDeclined}, // registered here, but its app is not connected
		{"full", "admission", frame.ErrCodeBusy},
	} {
		var c routing.Call
		c.Reset(tc.service, frame.AppendHeader(nil, frame.HeaderCallerName, "caller"))
		err := r.firstHop.Route(&c)
		c.Release()
		if r.firstHop.StoppedAt(&c) != tc.stage || frame.CodeOf(err) != tc.code && tc.code != 0 || tc.code == 0 && err != nil {
			t.Errorf("%s: refused by %q with %v, want %q with %v", tc.service, r.firstHop.StoppedAt(&c), err, tc.stage, tc.code)
		}
	}
	r.Drain()
	var c routing.Call
	c.Reset("full", nil)
	if err := r.firstHop.Route(&c); r.firstHop.StoppedAt(&c) != "drain" || frame.CodeOf(err) != frame.ErrCodeDeclined {
		t.Fatalf("while draining: %v by %q", err, r.firstHop.StoppedAt(&c))
	}
}

// BenchmarkPipeline is the relay's whole per-call decision path when nothing
// fails: the first hop's pipeline (policy, kill switch, caller limit,
// discovery read, pick, connect, admission), the explanation record, and
// the feedback at the end. 0 allocations.
func BenchmarkPipeline(b *testing.B) {
	reg := discovery.NewLocal()
	r := New(Config{Self: "self:1", Registry: reg, Logger: testkit.Quiet,
		Policies: router.Policies{"svc": {CallerRateLimit: 1e9, RateLimit: 1e9, Burst: 1 << 30, MaxConcurrent: 1 << 20}}})
	app := new(conn.Conn)
	for i := range 5 {
		inst := discovery.Instance{Service: "svc", ID: fmt.Sprintf("svc-%d", i), Addr: "self:1"}
		reg.Register(context.Background(), inst)
		r.AddLocal(inst, app)
	}
	h := frame.AppendHeader(frame.AppendHeader(nil, "cn", "caller"), "as", "raw")
	rc := new(relayed)
	b.ReportAllocs()
	for b.Loop() {
		c := &rc.call
		c.Reset("svc", h)
		if err := r.firstHop.Route(c); err != nil {
			b.Fatal(err)
		}
		att := r.bal.Send(c)
		rc.rec = record{}
		rc.rec.add(c.Instance(), c.Choice())
		att.Done(routing.Outcome{})
		rc.rec.end(routing.Outcome{}, 0)
		c.Release()
	}
}
