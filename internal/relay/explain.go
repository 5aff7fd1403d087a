package relay

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/routing"
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
	tracing  frame.Tracing
	caller   string        // interned (names)
	n        uint8         // attempts recorded
	code     frame.ErrCode // of a refusal
}

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
	rec.n++
}

// end marks the current attempt finished.
func (rec *record) end(o routing.Outcome, latency time.Duration) {
	if rec.n > 0 {
		a := rec.attempt(int(rec.n) - 1)
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
		rec record
	}
}

func (rc *recentCalls) add(rec *record) {
	s := &rc.slots[(rc.next.Add(1)-1)%uint64(len(rc.slots))]
	s.mu.Lock()
	s.rec = *rec
	s.mu.Unlock()
}

// Explanation is one call's routing decisions in words, for the admin API,
// meshctl call --explain and trace tags.
type Explanation struct {
	At      time.Time `json:"at"`
	Service string    `json:"service"`
	Caller  string    `json:"caller,omitempty"`
	TraceID string    `json:"trace_id"`
	SpanID  string    `json:"span_id"`
	// Stage names the stage that refused the call, with Refused its words.
	Stage    string        `json:"stage,omitempty"`
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
		Caller:  rec.caller,
		TraceID: fmt.Sprintf("%016x", rec.tracing.TraceID),
		SpanID:  fmt.Sprintf("%016x", rec.tracing.SpanID),
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

// appendWhy writes why attempt i went where it did, in words (terse: see
// routing.Choice.AppendWhy).
func (rec *record) appendWhy(b []byte, i int, terse bool) []byte {
	if i > 0 {
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
		if (service == "" || s.rec.service == service) && (spanID == 0 || s.rec.tracing.SpanID == spanID) {
			out = append(out, s.rec.explain())
		}
		s.mu.Unlock()
	}
	return slices.Clip(out)
}
