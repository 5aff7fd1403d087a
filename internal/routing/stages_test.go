package routing

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/frame"

	"github.com/meshrpc/mesh/router"
)

// stageFunc makes a Stage of a function, for tests.
type stageFunc func(c *Call) error

func (f stageFunc) Name() string        { return "func" }
func (f stageFunc) Route(c *Call) error { return f(c) }

func TestPipelineStopsAtTheFirstRefusal(t *testing.T) {
	var ran []string
	step := func(name string, err error) Stage {
		return stageFunc(func(*Call) error { ran = append(ran, name); return err })
	}
	p := Pipeline{step("a", nil), step("b", &frame.Error{Code: frame.ErrCodeBusy, Message: "full"}), step("c", nil)}
	err := p.Route(new(Call))
	var ref *frame.Error
	if !errors.As(err, &ref) || ref.Code != frame.ErrCodeBusy || fmt.Sprint(ran) != "[a b]" {
		t.Fatalf("err %v after %v", err, ran)
	}
}

// Discover then the Balancer pick among the instances not tried and not
// excluded; with none left the call is declined, saying why.
func TestDiscoverAndBalancerStages(t *testing.T) {
	reg := discovery.NewLocal()
	for i := range 3 {
		reg.Register(context.Background(), discovery.Instance{Service: "svc", ID: fmt.Sprint("i", i), Addr: "h:1"})
	}
	b, err := NewBalancer(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := Pipeline{Discover{From: reg}, b}
	for _, tc := range []struct {
		name     string
		tried    []string
		exclude  int // picks to exclude after the first
		wantPick bool
	}{
		{"fresh", nil, 0, true},
		{"two tried", []string{"i0", "i2"}, 0, true},
		{"one tried, one unreachable", []string{"i1"}, 1, true},
		{"all tried", []string{"i0", "i1", "i2"}, 0, false},
		{"none reachable", nil, 3, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c Call
			c.Reset("svc", frame.AppendHeader(nil, frame.HeaderCallerName, "caller"))
			c.Tried = append(c.Tried, tc.tried...)
			err := p.Route(&c)
			for range tc.exclude {
				if err != nil {
					break
				}
				c.Exclude()
				err = b.Route(&c)
			}
			if !tc.wantPick {
				var ref *frame.Error
				if !errors.As(err, &ref) || ref.Code != frame.ErrCodeDeclined {
					t.Fatalf("want a refusal, got %v (picked %d)", err, c.Picked)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, id := range tc.tried {
				if c.Instance().ID == id {
					t.Fatalf("picked %s, already tried", id)
				}
			}
			if len(c.Choice().AppendWhy(nil, false)) == 0 {
				t.Fatal("no explanation")
			}
		})
	}
	var c Call
	c.Reset("nosuch", nil)
	if err := p.Route(&c); err == nil {
		t.Fatal("a service with no instances was routed")
	}
}

// MayRetry allows only safe codes under the "re" flags, within the attempts
// of the policy.
func TestMayRetry(t *testing.T) {
	b, _ := NewBalancer(router.Policies{"svc": {MaxAttempts: 2}}, nil)
	for _, tc := range []struct {
		code  frame.ErrCode
		re    string
		tried int
		want  bool
	}{
		{frame.ErrCodeBusy, "", 1, true},
		{frame.ErrCodeDeclined, "c", 1, true},
		{frame.ErrCodeNetwork, "", 1, true},
		{frame.ErrCodeNetwork, "t", 1, false},
		{frame.ErrCodeTimeout, "c", 1, false},
		{frame.ErrCodeTimeout, "ct", 1, true},
		{frame.ErrCodeBusy, "n", 1, false},
		{frame.ErrCodeBadRequest, "ct", 1, false},
		{frame.ErrCodeUnexpected, "ct", 1, false},
		{frame.ErrCodeBusy, "", 2, false}, // attempts used up
	} {
		var c Call
		c.Reset("svc", frame.AppendHeader(nil, frame.HeaderRetryFlags, tc.re))
		for i := range tc.tried {
			c.Tried = append(c.Tried, fmt.Sprint(i))
		}
		if got := b.MayRetry(&c, tc.code, time.Second); got != tc.want {
			t.Errorf("%v with re %q after %d tries: %v, want %v", tc.code, tc.re, tc.tried, got, tc.want)
		}
	}
}

func TestAuthorizeDecidesOnTheProvenCaller(t *testing.T) {
	allowed := func(c *Call) (bool, string) {
		caller, service := c.Caller, c.Service
		if string(caller) == "web" && service == "payments" {
			return true, "intention web => payments (allow)"
		}
		return false, "default deny (no intention matches)"
	}
	for _, tc := range []struct {
		caller, service string
		rule            string // in the refusal; "" for allowed
	}{
		{"web", "payments", ""},
		{"batch", "payments", "default deny"},
		{"anonymous", "payments", "default deny"},
	} {
		var c Call
		c.Reset(tc.service, frame.AppendHeader(nil, frame.HeaderCallerName, "web")) // cn says web: not what counts
		c.Caller = []byte(tc.caller)
		p := Pipeline{Authorize{Allowed: allowed}}
		err := p.Route(&c)
		var ref *frame.Error
		switch {
		case tc.rule == "" && err != nil:
			t.Errorf("%s => %s refused: %v", tc.caller, tc.service, err)
		case tc.rule != "" && (!errors.As(err, &ref) || ref.Code != frame.ErrCodeBadRequest || !strings.Contains(ref.Message, tc.rule) || p.StoppedAt(&c) != "authorize"):
			t.Errorf("%s => %s: %v (by %q), want a bad request naming %q", tc.caller, tc.service, err, p.StoppedAt(&c), tc.rule)
		}
	}
	var c Call
	c.Reset("any", nil)
	if err := (Authorize{}).Route(&c); err != nil {
		t.Errorf("no intentions: %v", err)
	}
}
