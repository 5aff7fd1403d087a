package routing

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.opentelemetry.io/otel/trace"

	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/golden"
)

// attempt sends one call of service to one of insts and ends it as o
// (sampled, in the trace of hex id traceID, when it is not "").
func attempt(t *testing.T, b *Balancer, service string, insts []discovery.Instance, o Outcome, traceID string) string {
	t.Helper()
	var c Call
	c.Reset(service, nil)
	c.Instances = insts
	if err := b.Route(&c); err != nil {
		t.Fatal(err)
	}
	att := b.Send(&c)
	if traceID != "" {
		tid, err := trace.TraceIDFromHex(fmt.Sprintf("%032s", traceID))
		if err != nil {
			t.Fatal(err)
		}
		att.DoneSampled(o, tid)
	} else {
		att.Done(o)
	}
	return c.Instance().ID
}

// series gathers the Balancer's families by name.
func series(t *testing.T, b *Balancer) map[string]*dto.MetricFamily {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(b)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// Past the cap, instances share one "_other" series whose counts are
// theirs together, each is told to overflow, and a forgotten instance's
// series frees a place for the next.
func TestInstanceSeriesAreCapped(t *testing.T) {
	b, _ := NewBalancer(nil, nil)
	overflowed := map[string]int{}
	b.CapSeries(golden.Caps{Instances: 2, Services: 1}, func(l string) { overflowed[l]++ })
	var insts []discovery.Instance
	for i := range 5 {
		insts = append(insts, discovery.Instance{Service: "svc", ID: fmt.Sprintf("svc-%d", i), Addr: fmt.Sprintf("10.0.0.%d:1", i)})
	}
	for range 100 {
		attempt(t, b, "svc", insts, Answered(false), "")
	}
	other := []discovery.Instance{{Service: "other", ID: "other-0", Addr: "10.0.1.1:1"}}
	for range 10 { // another service: its series are past the service cap
		attempt(t, b, "other", other, Failed(frame.ErrCodeBusy), "")
	}
	if overflowed["instance"] != 4 || overflowed["service"] != 1 {
		t.Fatalf("overflow told %v, want 4 instances and 1 service", overflowed)
	}
	mfs := series(t, b)
	byID := map[string]float64{}
	for _, m := range mfs["mesh_instance_attempts_total"].GetMetric() {
		byID[label(m, "instance_id")] += m.GetCounter().GetValue()
		if label(m, "instance_id") == golden.Other && (label(m, "service") != golden.Other || label(m, "instance_addr") != golden.Other) {
			t.Errorf("overflow series labelled %v", m.GetLabel())
		}
	}
	if len(byID) != 3 || byID[golden.Other] == 0 {
		t.Fatalf("attempts by instance_id %v: want 2 instances and %s", byID, golden.Other)
	}
	total := 0.0
	for _, n := range byID {
		total += n
	}
	if total != 110 {
		t.Fatalf("attempts sum to %v, want 110", total)
	}
	var closedOver float64
	for _, m := range mfs["mesh_breaker_state"].GetMetric() {
		if label(m, "instance_id") == golden.Other && label(m, "state") == "closed" {
			closedOver = m.GetGauge().GetValue()
		}
	}
	if closedOver < 3 { // other-0's breaker may have opened on its busy answers
		t.Fatalf("breakers of the instances past the cap, closed: %v, want 3 or 4", closedOver)
	}
	services := map[string]bool{}
	for _, m := range mfs["mesh_retries_total"].GetMetric() {
		services[label(m, "service")] = true
	}
	if len(services) != 2 || !services[golden.Other] {
		t.Fatalf("retries by service %v: want one service and %s", services, golden.Other)
	}

	// Forgetting a named instance frees its place.
	named := ""
	for id := range byID {
		if id != golden.Other {
			named = id
			break
		}
	}
	b.eps.m.Range(func(_, v any) bool {
		if e := v.(*endpoint); e.id == named {
			e.listed.Store(0)
		}
		return true
	})
	if n := b.Forget(time.Now(), time.Minute); n != 1 {
		t.Fatalf("forgot %d instances, want 1", n)
	}
	fresh := discovery.Instance{Service: "svc", ID: "svc-new", Addr: "10.0.0.9:1"}
	attempt(t, b, "svc", []discovery.Instance{fresh}, Answered(false), "")
	found := false
	for _, m := range series(t, b)["mesh_instance_attempts_total"].GetMetric() {
		if label(m, "instance_id") == named {
			t.Fatalf("forgotten instance %s still has a series", named)
		}
		found = found || label(m, "instance_id") == "svc-new"
	}
	if !found || overflowed["instance"] != 4 {
		t.Fatalf("the instance after a forgotten one: series %v, overflow %v", found, overflowed)
	}
}

// A sampled attempt's trace id is the exemplar of its latency bucket.
func TestInstanceLatencyHasExemplars(t *testing.T) {
	b, _ := NewBalancer(nil, nil)
	inst := []discovery.Instance{{Service: "svc", ID: "svc-1", Addr: "10.0.0.1:1"}}
	attempt(t, b, "svc", inst, Answered(false), "")
	attempt(t, b, "svc", inst, Answered(false), "abc")
	attempt(t, b, "svc", inst, Answered(false), "5b8efff798038103d269b633813fc60c")
	h := series(t, b)["mesh_instance_attempt_duration_seconds"].GetMetric()[0].GetHistogram()
	var got []string
	for _, bk := range h.GetBucket() {
		if x := bk.GetExemplar(); x != nil {
			for _, l := range x.GetLabel() {
				got = append(got, l.GetName()+"="+l.GetValue())
			}
			if x.GetValue() > bk.GetUpperBound() {
				t.Errorf("exemplar %v above its bucket's bound %v", x.GetValue(), bk.GetUpperBound())
			}
		}
	}
	// The last sampled attempt of the bucket (a 128-bit id: all of it).
	if want := "trace_id=5b8efff798038103d269b633813fc60c"; h.GetSampleCount() != 3 || len(got) != 1 || got[0] != want {
		t.Fatalf("%d samples, exemplars %v: want 3 and %s", h.GetSampleCount(), got, want)
	}
}
