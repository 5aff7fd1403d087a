package routing

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/conn"
	"github.com/meshrpc/mesh/internal/testkit"
)

// slowFinder has no answer about any service until ready is closed.
type slowFinder struct {
	ready chan struct{}
	insts []discovery.Instance
}

func (f *slowFinder) Lookup(string) ([]discovery.Instance, <-chan struct{}, error) {
	select {
	case <-f.ready:
		return f.insts, nil, nil
	default:
		return nil, f.ready, nil
	}
}

// A stage that must wait stops the pipeline with ErrWait and what to wait
// for; Resume goes on from that stage, so the stages before it (a caller's
// rate limit, say) run once.
func TestPipelineWaitsAndResumes(t *testing.T) {
	b, _ := NewBalancer(nil, testkit.Quiet)
	find := &slowFinder{ready: make(chan struct{}), insts: []discovery.Instance{{Service: "s", ID: "s-1", Addr: "h:1"}}}
	dialled := make(chan struct{})
	the := new(conn.Conn)
	dial := func(discovery.Instance) (*conn.Conn, <-chan struct{}, error) {
		select {
		case <-dialled:
			return the, nil, nil
		default:
			return nil, dialled, nil
		}
	}
	before := 0
	p := Pipeline{stageFunc(func(*Call) error { before++; return nil }), Discover{From: find}, b, Connect{Balancer: b, Dial: dial}}
	var c Call
	c.Reset("s", nil)
	if err := p.Route(&c); err != ErrWait || c.Wait != (<-chan struct{})(find.ready) {
		t.Fatalf("before the registry answers: %v", err)
	}
	close(find.ready)
	if err := p.Resume(&c); err != ErrWait || c.Wait != (<-chan struct{})(dialled) {
		t.Fatalf("before the dial ends: %v", err)
	}
	close(dialled)
	if err := p.Resume(&c); err != nil || c.Conn != the || before != 1 {
		t.Fatalf("after both: %v, conn %p, the first stage ran %d times", err, c.Conn, before)
	}
}

// RouteWaiting waits where a stage must, within its context: past it, the
// call is refused Timeout by the stage that waited.
func TestRouteWaitingEndsWithItsContext(t *testing.T) {
	find := &slowFinder{ready: make(chan struct{})}
	p := Pipeline{Discover{From: find}}
	var c Call
	c.Reset("s", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	err := p.RouteWaiting(ctx, &c)
	var fe *frame.Error
	if !errors.As(err, &fe) || fe.Code != frame.ErrCodeTimeout || p.StoppedAt(&c) != StageDiscover {
		t.Fatalf("a lookup that never answers: %v, refused by %q", err, p.StoppedAt(&c))
	}
}

// An instance the Balancer was told is down is not picked while another is
// usable, and is again after its time; with every one down, one is picked
// anyway (it may be back).
func TestDownInstancesAreSkipped(t *testing.T) {
	reg := discovery.NewLocal()
	for _, id := range []string{"a", "b"} {
		reg.Register(context.Background(), discovery.Instance{Service: "s", ID: id, Addr: id + ":1"})
	}
	b, _ := NewBalancer(nil, testkit.Quiet)
	insts, _ := reg.Instances(context.Background(), "s")
	b.Down(insts[0], time.Now().Add(time.Hour))
	p := Pipeline{Discover{From: reg}, b}
	for range 100 {
		var c Call
		c.Reset("s", nil)
		if err := p.Route(&c); err != nil || c.Instance().ID != "b" {
			t.Fatalf("picked %s (%v) with a down", c.Instance().ID, err)
		}
	}
	b.Down(insts[1], time.Now().Add(time.Hour))
	var c Call
	c.Reset("s", nil)
	if err := p.Route(&c); err != nil || !c.Choice().panic {
		t.Fatalf("with both down: %v, panic %v", err, c.Choice().panic)
	}
	b.Down(insts[0], time.Now().Add(-time.Second)) // its time is over
	c.Reset("s", nil)
	if err := p.Route(&c); err != nil || c.Instance().ID != "a" {
		t.Fatalf("a's down time is over: picked %s, %v", c.Instance().ID, err)
	}
}
