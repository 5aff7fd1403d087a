package router

import (
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/meshrpc/mesh/frame"
)

// How an instance was chosen.
type pickKind uint8

const (
	byNothing    pickKind = iota
	byP2C                 // power of two choices on peak-EWMA cost
	byRendezvous          // rendezvous hashing on the shard key
	byRoundRobin          // the next usable instance in turn
)

// choice is what route tells about a pick, for the call's explanation.
type choice struct {
	how         pickKind
	considered  int  // instances the registry returned
	open        int  // of them behind open breakers
	unreachable int  // of them found unreachable during this pick
	panic       bool // all were behind open breakers, so breakers were ignored
	rival       *endpoint
	cost        float64
	rivalCost   float64
}

// attemptRecord is one attempt of a call, kept compactly: pointers and
// numbers, turned into words only when someone asks.
type attemptRecord struct {
	ep      *endpoint
	addr    string
	choice  choice
	result  outcome
	latency time.Duration
	done    bool
}

// record is one call's routing decisions.
type record struct {
	at       time.Time
	service  string
	caller   [32]byte
	callerN  uint8
	tracing  frame.Tracing
	attempts [4]attemptRecord
	n        int
	refused  string
	code     frame.ErrCode // of a refusal
}

func (rec *record) setCaller(c []byte) {
	rec.callerN = uint8(copy(rec.caller[:], c))
}

func (rec *record) add(ep *endpoint, addr string, ch choice) {
	if rec.n < len(rec.attempts) {
		rec.attempts[rec.n] = attemptRecord{ep: ep, addr: addr, choice: ch}
		rec.n++
	}
}

// end marks the current attempt finished.
func (rec *record) end(o outcome, latency time.Duration) {
	if rec.n > 0 {
		a := &rec.attempts[rec.n-1]
		a.result, a.latency, a.done = o, latency, true
	}
}

// recentCalls keeps the last calls' records in a fixed ring.
type recentCalls struct {
	mu   sync.Mutex
	recs [1024]record
	next int
}

func (rc *recentCalls) add(rec *record) {
	rc.mu.Lock()
	rc.recs[rc.next%len(rc.recs)] = *rec
	rc.next++
	rc.mu.Unlock()
}

// Explanation is one call's routing decisions in words, for the admin API,
// meshctl call --explain and trace tags.
type Explanation struct {
	At       time.Time     `json:"at"`
	Service  string        `json:"service"`
	Caller   string        `json:"caller,omitempty"`
	TraceID  string        `json:"trace_id"`
	SpanID   string        `json:"span_id"`
	Refused  string        `json:"refused,omitempty"`
	Attempts []AttemptInfo `json:"attempts,omitempty"`
	Result   string        `json:"result"`
}

// AttemptInfo is one attempt in words.
type AttemptInfo struct {
	Instance string  `json:"instance"`
	Addr     string  `json:"addr,omitempty"`
	Why      string  `json:"why"`
	Result   string  `json:"result"`
	Millis   float64 `json:"ms"`
}

func (rec *record) explain() Explanation {
	e := Explanation{
		At:      rec.at,
		Service: rec.service,
		Caller:  string(rec.caller[:rec.callerN]),
		TraceID: fmt.Sprintf("%016x", rec.tracing.TraceID),
		SpanID:  fmt.Sprintf("%016x", rec.tracing.SpanID),
		Refused: rec.refused,
	}
	for i := range rec.n {
		a := &rec.attempts[i]
		info := AttemptInfo{Addr: a.addr, Millis: float64(a.latency.Microseconds()) / 1000, Result: "in flight"}
		if a.ep != nil {
			info.Instance = a.ep.id
		}
		info.Why = string(rec.appendWhy(nil, i, false))
		if a.done {
			info.Result = resultName(a.result)
		}
		e.Attempts = append(e.Attempts, info)
	}
	switch {
	case rec.refused != "":
		e.Result = "refused: " + rec.code.String()
	case rec.n > 0:
		e.Result = e.Attempts[rec.n-1].Result
	}
	return e
}

// appendWhy writes why attempt i went where it did, in words; terse leaves
// out what the cost means (a span tag on every traced call says it once per
// call, /calls and --explain say it in full).
func (rec *record) appendWhy(b []byte, i int, terse bool) []byte {
	ch := rec.attempts[i].choice
	if i > 0 {
		b = append(b, "retry: "...)
	}
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
	b = append(b, " instances"...)
	if ch.open > 0 {
		b = append(b, ", "...)
		b = strconv.AppendInt(b, int64(ch.open), 10)
		b = append(b, " behind open breakers"...)
	}
	if ch.unreachable > 0 {
		b = append(b, ", "...)
		b = strconv.AppendInt(b, int64(ch.unreachable), 10)
		b = append(b, " unreachable"...)
	}
	if ch.panic {
		b = append(b, "; all breakers open, so picked regardless"...)
	}
	return append(b, ')')
}

// appendMicros writes a cost in nanoseconds as microseconds, one decimal.
func appendMicros(b []byte, ns float64) []byte {
	b = strconv.AppendFloat(b, ns/1e3, 'f', 1, 64)
	return append(b, "µs"...)
}

func resultName(o outcome) string {
	if !o.judged {
		return "cancelled by caller"
	}
	return resultNames[resultSlot(o)]
}

// Recent returns the explanations of recent calls, newest first: those of
// service (all when empty) and, when spanID is not 0, only that call.
func (r *Router) Recent(service string, spanID uint64, limit int) []Explanation {
	r.recent.mu.Lock()
	var out []Explanation
	for i := 1; i <= len(r.recent.recs) && i <= r.recent.next && len(out) < limit; i++ {
		rec := &r.recent.recs[(r.recent.next-i)%len(r.recent.recs)]
		if service != "" && rec.service != service || spanID != 0 && rec.tracing.SpanID != spanID {
			continue
		}
		out = append(out, rec.explain())
	}
	r.recent.mu.Unlock()
	return slices.Clip(out)
}
