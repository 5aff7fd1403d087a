package routing

import (
	"math/rand/v2"

	"github.com/meshrpc/mesh/router"
)

// Zone-aware routing, after Envoy's zone_aware_lb_config: a meshd that
// knows its zone keeps a call there while the zone's share of the
// service's healthy instances covers its share of the callers (the meshds,
// each taken to call as much as another). When it does not, the calls it
// cannot carry spill over to the other zones in proportion to their spare
// capacity (their share of instances beyond their share of callers), so a
// zone with few instances and many callers does not overload them; with no
// usable instance at home, every call goes elsewhere. A shard key's
// instance wins over the zone; a service with fewer healthy instances than
// the policy's zone_min_instances ignores zones.

// maxZones bounds the zones one pick tells apart: a service spread over
// more is balanced as if it had none.
const maxZones = 8

// zoneView is what the Balancer knows of zones: this meshd's and each
// zone's share of the callers. Replaced whole by SetZones.
type zoneView struct {
	local   string
	callers map[string]float64 // zone → its share of the meshds
	home    float64            // callers[local]
}

// SetZones tells the Balancer this meshd's zone (local; "" turns zones off)
// and how many meshds, the callers, each zone has; this meshd counts even
// when callers does not list it yet.
func (b *Balancer) SetZones(local string, callers map[string]int) {
	if local == "" {
		b.zones.Store(nil)
		return
	}
	counts := map[string]int{local: 1}
	for z, n := range callers {
		counts[z] = max(counts[z], n)
	}
	total := 0
	for _, n := range counts {
		total += n
	}
	v := &zoneView{local: local, callers: make(map[string]float64, len(counts))}
	for z, n := range counts {
		v.callers[z] = float64(n) / float64(total)
	}
	v.home = v.callers[local]
	b.zones.Store(v)
}

// Zone is this meshd's zone, as SetZones last said ("": none).
func (b *Balancer) Zone() string {
	if v := b.zones.Load(); v != nil {
		return v.local
	}
	return ""
}

// zoneKind is what zones did to one pick.
type zoneKind uint8

const (
	zoneNone     zoneKind = iota // this meshd knows no zone
	zoneStayed                   // kept in this meshd's zone
	zoneSpilled                  // sent elsewhere: home lacks the capacity its callers need
	zoneHomeDown                 // sent elsewhere: no usable instance at home
	zoneTried                    // the zone chosen has no instance left untried
	zoneTooFew                   // ignored: fewer healthy instances than zone_min_instances
	zoneTooMany                  // ignored: instances in more than maxZones zones
	zoneOff                      // ignored: the policy turns zones off
	zoneShardKey                 // the shard key's instance, wherever it is
	numZoneKinds
)

// zoneCauses are the cause labels of mesh_cross_zone_attempts_total, by
// zoneKind (zoneNone and zoneStayed never cross).
var zoneCauses = [numZoneKinds]string{"", "", "spillover", "home_down", "no_untried_instance", "too_few_instances", "too_many_zones", "zones_off", "shard_key"}

// zoneCount is one zone's usable instances in one pick.
type zoneCount struct {
	name   string
	usable int
}

// keepInZone narrows c's candidates to the zone its call goes to (by
// skipping the others), and notes why in its Choice.
func (b *Balancer) keepInZone(c *Call, p *router.Policy) {
	ch := &c.choice
	v := b.zones.Load()
	ch.zones, ch.zone = v, zoneNone
	if v == nil {
		return
	}
	if p.Zones == router.ZonesOff {
		ch.zone = zoneOff
		return
	}
	var zs [maxZones]zoneCount
	n, total, home := 0, 0, -1
	for _, e := range c.eps {
		if !e.usable() || !e.reachable() {
			continue
		}
		j := 0
		for j < n && zs[j].name != e.zone {
			j++
		}
		if j == n {
			if n == maxZones {
				ch.zone = zoneTooMany
				return
			}
			zs[n].name = e.zone
			if e.zone == v.local {
				home = n
			}
			n++
		}
		zs[j].usable++
		total++
	}
	if total < p.ZoneMinInstances {
		ch.zone = zoneTooFew
		return
	}
	share := 0.0
	if home >= 0 {
		share = float64(zs[home].usable) / float64(total)
	}
	ch.homePct, ch.callerPct = percent(share), percent(v.home)
	target := home
	switch {
	case home < 0:
		ch.zone, target = zoneHomeDown, spill(zs[:n], home, total, v)
	case share >= v.home || rand.Float64()*v.home < share:
		ch.zone = zoneStayed
	default:
		ch.zone, target = zoneSpilled, spill(zs[:n], home, total, v)
	}
	if target < 0 || !onlyZone(c, zs[target].name) {
		ch.zone = zoneTried
	}
}

// spill picks a zone other than home for a call home cannot carry: each
// in proportion to its spare capacity (its share of the usable instances
// beyond its share of the callers), or, when none has any, of its usable
// instances. It returns -1 if there is no other zone.
func spill(zs []zoneCount, home, total int, v *zoneView) int {
	var spare [maxZones]float64
	sum := 0.0
	for i, z := range zs {
		if i != home {
			spare[i] = max(0, float64(z.usable)/float64(total)-v.callers[z.name])
			sum += spare[i]
		}
	}
	if sum == 0 {
		for i, z := range zs {
			if i != home {
				spare[i] = float64(z.usable)
				sum += spare[i]
			}
		}
	}
	if sum == 0 {
		return -1
	}
	x := rand.Float64() * sum
	last := -1
	for i := range zs {
		if spare[i] > 0 {
			last = i
			if x -= spare[i]; x < 0 {
				return i
			}
		}
	}
	return last
}

// onlyZone skips c's candidates outside zone, if zone has one that may be
// picked; it reports whether it did.
func onlyZone(c *Call, zone string) bool {
	found := false
	for i, e := range c.eps {
		if e.zone == zone && ok(c.eps, c.skip, i, false) {
			found = true
			break
		}
	}
	if !found {
		return false
	}
	for i, e := range c.eps {
		if e.zone != zone {
			c.skip.set(i)
		}
	}
	return true
}

func percent(f float64) uint8 { return uint8(min(100, f*100+0.5)) }

// crossedZone reports whether an attempt at e leaves this meshd's zone,
// and why.
func (ch *Choice) crossedZone(e *endpoint) (zoneKind, bool) {
	if ch.zones == nil || e.zone == ch.zones.local {
		return 0, false
	}
	return ch.zone, true
}
