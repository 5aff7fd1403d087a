package routing

import "strconv"

// How an instance was chosen.
type pickKind uint8

const (
	byNothing    pickKind = iota
	byP2C                 // power of two choices on peak-EWMA cost
	byRendezvous          // rendezvous hashing on the shard key
	byRoundRobin          // the next usable instance in turn
)

// Choice is what the Balancer tells about one pick, for the call's
// explanation: kept as numbers and pointers, turned into words only when
// someone asks (AppendWhy), so recording it costs the call path nothing.
type Choice struct {
	rival, picked *endpoint
	zones         *zoneView // this meshd's zone and its callers', when known (zone.go)
	cost          float32
	rivalCost     float32
	considered    int32  // instances the registry returned
	open          uint16 // of them behind open breakers (saturating: see count16)
	unreachable   uint16 // of them found unreachable during this pick
	down          uint16 // of them known unreachable: their last dial failed (Balancer.Down)
	how           pickKind
	panic         bool     // all were behind open breakers, so breakers were ignored
	zone          zoneKind // what zones did to the pick
	homePct       uint8    // the home zone's share of the usable instances, in percent
	callerPct     uint8    // its share of the callers
}

// count16 is n as a Choice keeps a count: up to 65,535 (a service's
// instances past that are not told apart in explanations).
func count16(n int) uint16 { return uint16(min(n, 1<<16-1)) }

// AppendWhy writes why the instance was picked, in words; terse leaves out
// what the cost means (a span tag on every traced call says it once per
// call, /calls and --explain say it in full).
func (ch Choice) AppendWhy(b []byte, terse bool) []byte {
	switch ch.how {
	case byRendezvous:
		b = append(b, "shard key: the highest rendezvous hash"...)
	case byRoundRobin:
		b = append(b, "round robin"...)
	case byP2C:
		b = append(b, "power of two choices: expected wait "...)
		b = appendMicros(b, float64(ch.cost))
		if !terse {
			b = append(b, " (peak-EWMA latency × calls in flight)"...)
		}
		if ch.rival != nil {
			b = append(b, " beat "...)
			b = append(b, ch.rival.id...)
			b = append(b, " at "...)
			b = appendMicros(b, float64(ch.rivalCost))
		} else {
			b = append(b, ", the only usable instance"...)
		}
	}
	b = append(b, " ("...)
	b = strconv.AppendInt(b, int64(ch.considered), 10)
	b = append(b, " instance"...)
	if ch.considered != 1 {
		b = append(b, 's')
	}
	if ch.open > 0 {
		b = append(b, ", "...)
		b = strconv.AppendInt(b, int64(ch.open), 10)
		b = append(b, " behind open breakers"...)
	}
	if ch.down > 0 {
		b = append(b, ", "...)
		b = strconv.AppendInt(b, int64(ch.down), 10)
		b = append(b, " known unreachable"...)
	}
	if ch.unreachable > 0 {
		b = append(b, ", "...)
		b = strconv.AppendInt(b, int64(ch.unreachable), 10)
		b = append(b, " unreachable"...)
	}
	if ch.panic {
		if ch.down > 0 {
			b = append(b, "; none usable, so picked regardless"...)
		} else {
			b = append(b, "; all breakers open, so picked regardless"...)
		}
	}
	b = append(b, ')')
	return ch.appendZone(b)
}

// appendZone says what zones did to the pick: nothing when this meshd
// knows no zone, and when the call stayed home only that; why, when it
// left.
func (ch Choice) appendZone(b []byte) []byte {
	if ch.zones == nil || ch.picked == nil {
		return b
	}
	home, there := ch.zones.local, ch.picked.zone
	if ch.zone == zoneStayed || there == home {
		return append(append(b, "; in its zone "...), home...)
	}
	b = append(append(append(append(b, "; left its zone "...), home...), " for "...), there...)
	b = append(b, ": "...)
	switch ch.zone {
	case zoneSpilled:
		b = append(append(b, home...), " holds "...)
		b = strconv.AppendInt(b, int64(ch.homePct), 10)
		b = append(b, "% of the usable instances for "...)
		b = strconv.AppendInt(b, int64(ch.callerPct), 10)
		b = append(b, "% of the callers, so "...)
		b = strconv.AppendInt(b, int64(100-100*int(ch.homePct)/max(1, int(ch.callerPct))), 10)
		b = append(b, "% of its calls spill over to zones with spare capacity"...)
	case zoneHomeDown:
		b = append(append(b, "no usable instance in "...), home...)
	case zoneTried:
		b = append(b, "no untried usable instance in the zone chosen"...)
	case zoneTooFew:
		b = append(b, "zones ignored, fewer usable instances than zone_min_instances"...)
	case zoneTooMany:
		b = append(b, "zones ignored, instances in more than 8 zones"...)
	case zoneOff:
		b = append(b, "zones off by policy"...)
	case zoneShardKey:
		b = append(b, "the shard key's instance is there"...)
	}
	return b
}

// appendMicros writes a cost in nanoseconds in the unit a person reads it
// in: µs below a millisecond, ms below a second, then s; one decimal.
func appendMicros(b []byte, ns float64) []byte {
	switch {
	case ns < 1e6:
		return append(strconv.AppendFloat(b, ns/1e3, 'f', 1, 64), "µs"...)
	case ns < 1e9:
		return append(strconv.AppendFloat(b, ns/1e6, 'f', 1, 64), "ms"...)
	}
	return append(strconv.AppendFloat(b, ns/1e9, 'f', 1, 64), 's')
}
