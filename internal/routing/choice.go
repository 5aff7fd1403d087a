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
	rival       *endpoint
	cost        float64
	rivalCost   float64
	considered  int32 // instances the registry returned
	open        int32 // of them behind open breakers
	unreachable int32 // of them found unreachable during this pick
	down        int32 // of them known unreachable: their last dial failed (Balancer.Down)
	how         pickKind
	panic       bool // all were behind open breakers, so breakers were ignored
}

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
		b = appendMicros(b, ch.cost)
		if !terse {
			b = append(b, " (peak-EWMA latency × calls in flight)"...)
		}
		if ch.rival != nil {
			b = append(b, " beat "...)
			b = append(b, ch.rival.id...)
			b = append(b, " at "...)
			b = appendMicros(b, ch.rivalCost)
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
	return append(b, ')')
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
