package routing

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/router"
)

// zoned returns n instances of svc in each zone given as "name:n".
func zoned(zones ...string) []discovery.Instance {
	var out []discovery.Instance
	for _, z := range zones {
		var name string
		var n int
		fmt.Sscanf(strings.Replace(z, ":", " ", 1), "%s %d", &name, &n)
		for i := range n {
			out = append(out, discovery.Instance{Service: "svc", ID: fmt.Sprintf("%s-%d", name, i),
				Addr: fmt.Sprintf("10.0.%d.%d:1", len(out), i), Meta: map[string]string{discovery.MetaZone: name}})
		}
	}
	return out
}

// picks sends calls from a meshd in zone home (callers: meshds per zone)
// and counts them per instance and how many left home; each attempt ends
// at once, so every instance looks alike to the balancer.
func picks(t *testing.T, b *Balancer, insts []discovery.Instance, calls int, key string) (map[string]int, int) {
	t.Helper()
	per, crossed := map[string]int{}, 0
	for i := range calls {
		var c Call
		var h frame.Headers
		if key != "" {
			h = frame.AppendHeader(nil, frame.HeaderShardKey, fmt.Sprint(key, i%4))
		}
		c.Reset("svc", h)
		c.Instances = insts
		if err := b.Route(&c); err != nil {
			t.Fatal(err)
		}
		att := b.Send(&c)
		att.Done(Answered(false))
		inst := c.Instance()
		per[inst.ID]++
		if inst.Meta[discovery.MetaZone] != b.Zone() {
			crossed++
		}
	}
	return per, crossed
}

// zoneBalancer is a Balancer of a meshd in zone home; it takes turns
// among the instances zones leave it (round robin), so the shares measured
// are the zones' doing, not latency's.
func zoneBalancer(t *testing.T, home string, callers map[string]int, p router.Policy) *Balancer {
	t.Helper()
	p.Balancer = router.BalancerRoundRobin
	b, err := NewBalancer(router.Policies{"svc": p}, nil)
	if err != nil {
		t.Fatal(err)
	}
	b.SetZones(home, callers)
	return b
}

func TestZonesKeepCallsHomeWhileItHasTheCapacity(t *testing.T) {
	for _, tc := range []struct {
		name      string
		insts     []discovery.Instance
		callers   map[string]int
		policy    router.Policy
		wantCross float64 // share of calls that leave home, ±0.05
	}{
		{"balanced zones", zoned("a:3", "b:3"), map[string]int{"a": 2, "b": 2}, router.Policy{}, 0},
		{"home has more than its share", zoned("a:4", "b:2"), map[string]int{"a": 1, "b": 1}, router.Policy{}, 0},
		// home holds 1/6 of the instances for 3/4 of the callers: it keeps
		// (1/6)/(3/4) of its calls, the rest spill over.
		{"home too small for its callers", zoned("a:1", "b:5"), map[string]int{"a": 3, "b": 1}, router.Policy{}, 1 - (1.0/6)/(3.0/4)},
		{"no instance at home", zoned("b:6"), map[string]int{"a": 1, "b": 1}, router.Policy{}, 1},
		{"fewer than zone_min_instances", zoned("a:2", "b:2"), map[string]int{"a": 1, "b": 1}, router.Policy{}, 0.5},
		{"zones off", zoned("a:3", "b:3"), map[string]int{"a": 1, "b": 1}, router.Policy{Zones: router.ZonesOff}, 0.5},
		{"min lowered", zoned("a:2", "b:2"), map[string]int{"a": 1, "b": 1}, router.Policy{ZoneMinInstances: 2}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := zoneBalancer(t, "a", tc.callers, tc.policy)
			const calls = 6000
			_, crossed := picks(t, b, tc.insts, calls, "")
			if got := float64(crossed) / calls; math.Abs(got-tc.wantCross) > 0.05 {
				t.Fatalf("%.3f of calls left zone a, want %.3f", got, tc.wantCross)
			}
		})
	}
}

// A zone with one instance and three times the callers of the other: each
// meshd's calls together load every instance alike (none above 1.5x the
// mean), where keeping calls home would put 3/4 of the load on one.
func TestZonesSpillOverInProportion(t *testing.T) {
	insts := zoned("a:1", "b:5")
	callers := map[string]int{"a": 3, "b": 1}
	load := map[string]int{}
	for home, calls := range map[string]int{"a": 3 * 4000, "b": 4000} { // each meshd calls alike: zone a has three
		per, _ := picks(t, zoneBalancer(t, home, callers, router.Policy{}), insts, calls, "")
		for id, n := range per {
			load[id] += n
		}
	}
	mean := float64(4*4000) / float64(len(insts))
	for id, n := range load {
		if float64(n) > 1.5*mean {
			t.Errorf("%s took %d calls, over 1.5x the mean %.0f", id, n, mean)
		}
	}
	t.Logf("calls per instance %v (mean %.0f)", load, mean)
}

// A shard key's instance wins over the zone: the same key reaches the same
// instance from both zones.
func TestShardKeyWinsOverZones(t *testing.T) {
	insts := zoned("a:3", "b:3")
	fromA, _ := picks(t, zoneBalancer(t, "a", map[string]int{"a": 1, "b": 1}, router.Policy{}), insts, 40, "key")
	fromB, _ := picks(t, zoneBalancer(t, "b", map[string]int{"a": 1, "b": 1}, router.Policy{}), insts, 40, "key")
	if fmt.Sprint(fromA) != fmt.Sprint(fromB) {
		t.Fatalf("keys landed differently: from a %v, from b %v", fromA, fromB)
	}
}

// Leaving the zone is explained and counted by cause.
func TestLeavingTheZoneIsExplainedAndCounted(t *testing.T) {
	b := zoneBalancer(t, "a", map[string]int{"a": 3, "b": 1}, router.Policy{})
	insts := zoned("a:1", "b:5")
	var left, stayed string
	for left == "" || stayed == "" {
		var c Call
		c.Reset("svc", nil)
		c.Instances = insts
		if err := b.Route(&c); err != nil {
			t.Fatal(err)
		}
		b.Send(&c).Done(Answered(false))
		why := string(c.Choice().AppendWhy(nil, false))
		if c.Instance().Meta[discovery.MetaZone] == "a" {
			stayed = why
		} else {
			left = why
		}
	}
	if !strings.Contains(stayed, "; in its zone a") {
		t.Errorf("a call that stayed: %q", stayed)
	}
	if want := "; left its zone a for b: a holds 17% of the usable instances for 75% of the callers, so 78% of its calls spill over"; !strings.Contains(left, want) {
		t.Errorf("a call that left: %q, want it to say %q", left, want)
	}
	var spilled float64
	for _, m := range series(t, b)["mesh_cross_zone_attempts_total"].GetMetric() {
		if label(m, "service") == "svc" && label(m, "cause") == "spillover" {
			spilled = m.GetCounter().GetValue()
		}
	}
	if spilled < 1 {
		t.Fatal("no mesh_cross_zone_attempts_total{cause=spillover}")
	}
}

// Keeping a call in its zone costs the pick no allocation.
func TestZonePickAllocatesNothing(t *testing.T) {
	b := zoneBalancer(t, "a", map[string]int{"a": 3, "b": 1}, router.Policy{})
	insts := zoned("a:1", "b:5")
	var c Call
	if n := testing.AllocsPerRun(1000, func() {
		c.Reset("svc", nil)
		c.Instances = insts
		if err := b.Route(&c); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("a zoned pick allocates %v times", n)
	}
}

// BenchmarkRouteZones is what zones add to a pick: six instances in two
// zones, from a meshd in the smaller share (so some calls spill over).
func BenchmarkRouteZones(b *testing.B) {
	insts := zoned("a:1", "b:5")
	for _, tc := range []struct {
		name string
		home string
	}{{"no-zone", ""}, {"zoned", "a"}} {
		b.Run(tc.name, func(b *testing.B) {
			bal, _ := NewBalancer(nil, nil)
			bal.SetZones(tc.home, map[string]int{"a": 3, "b": 1})
			var c Call
			b.ReportAllocs()
			for b.Loop() {
				c.Reset("svc", nil)
				c.Instances = insts
				if err := bal.Route(&c); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
