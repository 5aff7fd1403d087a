package routing

import (
	"context"
	"errors"
	"testing"

	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/testkit"

	"github.com/meshrpc/mesh/router"
)

// The kill switch, run in a pipeline as meshd runs it: a blocked caller is
// refused Declined by the "kill_switch" stage before discovery runs; other
// callers go on to a pick; "*" blocks everyone; lifting the block lets the
// caller through again.
func TestKillSwitchInAPipeline(t *testing.T) {
	reg := discovery.NewLocal()
	reg.Register(context.Background(), discovery.Instance{Service: "billing", ID: "billing-1", Addr: "h:1"})
	b, err := NewBalancer(router.Policies{"billing": {Blocked: []string{"legacy-batch"}}}, testkit.Quiet)
	if err != nil {
		t.Fatal(err)
	}
	var discovered int
	counting := stageFunc(func(c *Call) error { discovered++; return nil })
	p := Pipeline{KillSwitch{Balancer: b}, counting, Discover{From: reg}, b}
	route := func(caller string) (*Call, error) {
		var c Call
		c.Reset("billing", frame.AppendHeader(nil, frame.HeaderCallerName, caller))
		return &c, p.Route(&c)
	}
	for _, tc := range []struct {
		name     string
		caller   string
		policies router.Policies // set before the call, when not nil
		refused  bool
	}{
		{"blocked caller", "legacy-batch", nil, true},
		{"other caller", "orders", nil, false},
		{"everyone blocked", "orders", router.Policies{"billing": {Blocked: []string{"*"}}}, true},
		{"block lifted", "legacy-batch", router.Policies{"billing": {}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.policies != nil {
				if err := b.SetPolicies(tc.policies); err != nil {
					t.Fatal(err)
				}
			}
			before := discovered
			c, err := route(tc.caller)
			if !tc.refused {
				if err != nil || c.Instance().ID != "billing-1" {
					t.Fatalf("not routed: %v", err)
				}
				return
			}
			var e *frame.Error
			if !errors.As(err, &e) || e.Code != frame.ErrCodeDeclined || p.StoppedAt(c) != "kill_switch" {
				t.Fatalf("got %v refused by %q, want Declined by kill_switch", err, p.StoppedAt(c))
			}
			if discovered != before {
				t.Fatal("stages after the kill switch ran for a blocked caller")
			}
		})
	}
}
