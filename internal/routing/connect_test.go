package routing

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/conn"
	"github.com/meshrpc/mesh/internal/testkit"

	"github.com/meshrpc/mesh/router"
)

// Past 64 instances, unreachable and tried instances are still excluded:
// Connect goes through all 100 to the one that answers, and a call that
// tried 99 of them picks the last.
func TestMoreThan64Instances(t *testing.T) {
	const n = 100
	reg := discovery.NewLocal()
	for i := range n {
		reg.Register(context.Background(), discovery.Instance{Service: "wide", ID: fmt.Sprintf("wide-%03d", i), Addr: fmt.Sprintf("h%d:1", i)})
	}
	b, _ := NewBalancer(router.Policies{"wide": {MaxAttempts: 10}}, testkit.Quiet)
	reachable := "h97:1"
	dials := map[string]int{}
	the := new(conn.Conn)
	dial := func(inst discovery.Instance) (*conn.Conn, <-chan struct{}, error) {
		dials[inst.Addr]++
		if inst.Addr == reachable {
			return the, nil, nil
		}
		return nil, nil, errors.New("connection refused")
	}
	p := Pipeline{Discover{From: reg}, b, Connect{Balancer: b, Dial: dial}}
	for _, how := range []string{"p2c", "rendezvous"} {
		t.Run(how, func(t *testing.T) {
			clear(dials)
			var h frame.Headers
			if how == "rendezvous" {
				h = frame.AppendHeader(nil, frame.HeaderShardKey, "user-1")
			}
			var c Call
			c.Reset("wide", h)
			if err := p.Route(&c); err != nil {
				t.Fatal(err)
			}
			if c.Conn != the || c.Instance().Addr != reachable {
				t.Fatalf("connected to %s", c.Instance().Addr)
			}
			for addr, k := range dials {
				if k > 1 {
					t.Fatalf("%s dialled %d times in one pick", addr, k)
				}
			}
		})
	}
	reachable = "nowhere"
	var c Call
	c.Reset("wide", nil)
	err := p.Route(&c)
	if frame.CodeOf(err) != frame.ErrCodeDeclined || !strings.Contains(err.Error(), "connection refused") || len(dials) != n {
		t.Fatalf("with none reachable: %v after dialling %d of %d", err, len(dials), n)
	}

	// Tried: 99 of 100 already tried leaves one to pick, every time.
	pick := Pipeline{Discover{From: reg}, b}
	for range 50 {
		var c Call
		c.Reset("wide", nil)
		for i := range n {
			if i != 70 {
				c.Tried = append(c.Tried, fmt.Sprintf("wide-%03d", i))
			}
		}
		if err := pick.Route(&c); err != nil || c.Instance().ID != "wide-070" {
			t.Fatalf("picked %v (%v), want the one untried instance wide-070", c.Instance().ID, err)
		}
	}
}
