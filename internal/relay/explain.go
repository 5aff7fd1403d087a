package relay

import (
	"encoding/binary"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/golden"
	"github.com/meshrpc/mesh/internal/routing"
	"github.com/meshrpc/mesh/internal/tracing"
)

// attemptRecord is one attempt of a call, kept compactly: strings the call
// already had and the Balancer's Choice, turned into words only when someone
// asks.
type attemptRecord struct {
	instance string
	addr     string
	choice   routing.Choice
	result   routing.Outcome
	latency  time.Duration
	done     bool
	hedge    bool // sent while the attempt before it had not answered
	lost     bool // cancelled: the other attempt of a hedged call answered first
}

// record is one call's routing decisions.
type record struct {
	at      time.Time
	service string
	stage   string // of a refusal: the stage that refused
	refused string
	// The first two attempts are kept inline, as most calls have one; a
	// third and fourth go to more, allocated when needed.
	attempts [2]attemptRecord
	more     *[2]attemptRecord
	// The trace the call came in: its whole id once sampled (startSpan),
	// only its low 64 bits before (the high half of a 128-bit id is in a
	// header, read only for sampled calls).
	traceID trace.TraceID
	spanID  uint64
	caller  string        // interned (names)
	edge    *golden.Edge  // of a first hop's call: its method, as counted
	took    time.Duration // from the call's first frame to its end
	n       uint8         // attempts recorded
	cur     uint8         // the attempt end() ends: the last added, or the hedge that won
	code    frame.ErrCode // of a refusal
	result  golden.Result // as counted on the edge
}

// setTrace records the trace a call came in, as its tracing field says
// it: the trace id's low half.
func (rec *record) setTrace(t frame.Tracing) {
	rec.traceID, rec.spanID = tracing.TraceID(t, 0), t.SpanID
}

// setTraceHigh records the high half of the call's trace id.
func (rec *record) setTraceHigh(high uint64) { binary.BigEndian.PutUint64(rec.traceID[:8], high) }

// traceHigh is the high half of the call's trace id, as far as recorded.
func (rec *record) traceHigh() uint64 { return binary.BigEndian.Uint64(rec.traceID[:8]) }

// maxRecorded is how many attempts of one call a record keeps.
const maxRecorded = 4

// attempt is the record of attempt i (0-based, below rec.n).
func (rec *record) attempt(i int) *attemptRecord {
	if i < len(rec.attempts) {
		return &rec.attempts[i]
	}
	return &rec.more[i-len(rec.attempts)]
}

func (rec *record) add(inst discovery.Instance, ch routing.Choice) {
	if rec.n >= maxRecorded {
		return
	}
	if int(rec.n) == len(rec.attempts) && rec.more == nil {
		rec.more = new([2]attemptRecord)
	}
	*rec.attempt(int(rec.n)) = attemptRecord{instance: inst.ID, addr: inst.Addr, choice: ch}
	rec.cur = rec.n
	rec.n++
}

// ended is the attempt that ends the call (nil if it was not recorded).
func (rec *record) ended() *attemptRecord {
	if rec.cur >= rec.n {
		return nil
	}
	return rec.attempt(int(rec.cur))
}

// end marks the current attempt finished.
func (rec *record) end(o routing.Outcome, latency time.Duration) { rec.endAt(int(rec.cur), o, latency) }

// endAt marks attempt i finished (if it was recorded).
func (rec *record) endAt(i int, o routing.Outcome, latency time.Duration) {
	if i < int(rec.n) {
		a := rec.attempt(i)
		a.result, a.latency, a.done = o, latency, true
	}
}

// recentCalls keeps the last calls' records in a fixed ring. Each slot has
// its own lock and writers take slots with an atomic counter, so recording
// a call shares no lock with the other calls.
type recentCalls struct {
	next  atomic.Uint64
	slots [1024]struct {
		mu  sync.Mutex
		seq uint64 // 1 + the call's number: a reader knows the slot is written
		rec record
	}
}

func (rc *recentCalls) add(rec *record) {
	i := rc.next.Add(1) - 1
	s := &rc.slots[i%uint64(len(rc.slots))]
	s.mu.Lock()
	s.rec, s.seq = *rec, i+1
	s.mu.Unlock()
}

// Explanation is one call's routing decisions in words, for the admin API,
// meshctl call --explain and trace tags.
type Explanation struct {
	At      time.Time `json:"at"`
	Service string    `json:"service"`
	// Method is the method as counted on the call's edge (golden: capped,
	// "_unknown" for no such service); empty on a call's last hop.
	Method  string `json:"method,omitempty"`
	Caller  string `json:"caller,omitempty"`
	TraceID string `json:"trace_id"`
	SpanID  string `json:"span_id"`
	// Stage names the stage that refused the call, with Refused its words.
	Stage    string        `json:"stage,omitempty"`
	Refused  string        `json:"refused,omitempty"`
	Attempts []AttemptInfo `json:"attempts,omitempty"`
	Result   string        `json:"result"`
	// Outcome is the result label the call was counted under
	// (mesh_calls_total), and Millis the whole call's time, retries
	// included.
	Outcome string  `json:"outcome,omitempty"`
	Millis  float64 `json:"ms"`
}

// AttemptInfo is one attempt in words.
type AttemptInfo struct {
	Instance string  `json:"instance"`
	Addr     string  `json:"addr,omitempty"`
	Why      string  `json:"why"`
	Result   string  `json:"result"`
	Millis   float64 `json:"ms"`
	// Hedge marks an attempt sent while the one before it was unanswered.
	Hedge bool `json:"hedge,omitempty"`
}

// explain puts rec in words; results names its outcome (nil: left out).
func (rec *record) explain(results *golden.Edges) Explanation {
	e := Explanation{
		At:      rec.at,
		Millis:  float64(rec.took.Microseconds()) / 1000,
		Service: rec.service,
		Caller:  rec.caller,
		TraceID: golden.TraceID(rec.traceID),
		SpanID:  fmt.Sprintf("%016x", rec.spanID),
		Stage:   rec.stage,
		Refused: rec.refused,
	}
	for i := range int(rec.n) {
		a := rec.attempt(i)
		info := AttemptInfo{Instance: a.instance, Addr: a.addr, Millis: float64(a.latency.Microseconds()) / 1000, Result: "in flight"}
		info.Why = string(rec.appendWhy(nil, i, false))
		if a.done {
			info.Result = a.result.String()
		}
		info.Hedge = a.hedge
		switch {
		case a.lost:
			info.Result = "cancelled: the other attempt answered first"
		case a.hedge && a.done && a.result == routing.Answered(false), a.hedge && a.done && a.result == routing.Answered(true):
			info.Result += " (the hedge answered first)"
		}
		e.Attempts = append(e.Attempts, info)
	}
	if rec.edge != nil {
		e.Method = rec.edge.Method
	}
	if results != nil {
		e.Outcome = results.String(rec.result)
	}
	switch {
	case rec.refused != "":
		e.Result = "refused: " + rec.code.String()
	case rec.n > 0: // the attempt that ended the call: the last, or a hedge's winner
		e.Result = "in flight"
		if a := rec.ended(); a != nil && a.done {
			e.Result = a.result.String()
		}
	}
	return e
}

// appendWhy writes why attempt i went where it did, in words (terse: see
// routing.Choice.AppendWhy).
func (rec *record) appendWhy(b []byte, i int, terse bool) []byte {
	switch {
	case rec.attempt(i).hedge:
		b = append(b, "hedge, the attempt before it unanswered after the hedge delay: "...)
	case i > 0:
		b = append(b, "retry: "...)
	}
	return rec.attempt(i).choice.AppendWhy(b, terse)
}

// Recent returns the explanations of recent calls, newest first: those of
// service (all when empty) and, when spanID is not 0, only that call.
func (r *Relay) Recent(service string, spanID uint64, limit int) []Explanation {
	var out []Explanation
	next := r.recent.next.Load()
	n := uint64(len(r.recent.slots))
	for i := uint64(1); i <= n && i <= next && len(out) < limit; i++ {
		s := &r.recent.slots[(next-i)%n]
		s.mu.Lock()
		if (service == "" || s.rec.service == service) && (spanID == 0 || s.rec.spanID == spanID) {
			out = append(out, s.rec.explain(r.edges))
		}
		s.mu.Unlock()
	}
	return slices.Clip(out)
}

// Since returns the explanations of the calls recorded from cursor on (0:
// from the oldest kept), oldest first, at most limit, and the cursor to
// ask from next; missed counts those the ring dropped before they were
// read. A limit of 0 returns just the cursor of now.
func (r *Relay) Since(cursor uint64, limit int) (out []Explanation, next uint64, missed uint64) {
	next = r.recent.next.Load()
	if limit <= 0 { // where the calls stand now
		return nil, next, 0
	}
	n := uint64(len(r.recent.slots))
	from := cursor
	if next > n && from < next-n {
		if cursor > 0 {
			missed = next - n - from
		}
		from = next - n
	}
	if next-from > uint64(limit) {
		next = from + uint64(limit)
	}
	for i := from; i < next; i++ {
		s := &r.recent.slots[i%n]
		s.mu.Lock()
		seq := s.seq
		if seq == i+1 {
			out = append(out, s.rec.explain(r.edges))
		}
		s.mu.Unlock()
		switch {
		case seq < i+1: // taken, not yet written: ask again from here
			return out, i, missed
		case seq > i+1: // overwritten meanwhile
			missed++
		}
	}
	return out, next, missed
}
