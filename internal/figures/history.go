package figures

import (
	"slices"
	"sync"
	"time"

	"github.com/meshrpc/mesh/internal/golden"
)

// How often the counters are read, and how long each kind of figure is
// kept.
const (
	Step        = 10 * time.Second
	ServiceKeep = time.Hour
	EdgeKeep    = 5 * time.Minute
)

// Edge names one caller → service → method edge.
type Edge struct {
	Caller  string `json:"caller"`
	Service string `json:"service"`
	Method  string `json:"method"`
}

// slot is one Step of calls, compactly: calls in a Step fit 32 bits.
type slot struct {
	end      int64 // unix seconds when the step ended; 0: empty
	calls    uint32
	answered uint32
	buckets  [len(golden.Buckets) + 1]uint32
}

// ring keeps the last len(slots) steps.
type ring struct {
	slots []slot
	next  int
}

func (r *ring) push(s slot) {
	r.slots[r.next] = s
	r.next = (r.next + 1) % len(r.slots)
}

// window sums the slots that ended after since.
func (r *ring) window(since int64) Window {
	w := Window{Buckets: make([]uint64, len(golden.Buckets)+1)}
	for i := range r.slots {
		s := &r.slots[i]
		if s.end <= since {
			continue
		}
		w.Calls += uint64(s.calls)
		w.Answered += uint64(s.answered)
		for j, n := range s.buckets {
			w.Buckets[j] += uint64(n)
		}
	}
	return w
}

// History keeps the figures of the calls one meshd counted.
type History struct {
	answered func(golden.Result) bool

	mu       sync.Mutex
	last     map[Edge]golden.Totals // the counters at the previous step
	edges    map[Edge]*ring
	services map[string]*ring
	firstAt  time.Time // of the first step: the counters' baseline
	lastAt   time.Time
	quiet    map[Edge]int // steps an edge has had no call
}

// New returns an empty History.
func New() *History {
	return &History{answered: golden.Answered, last: map[Edge]golden.Totals{}, edges: map[Edge]*ring{},
		services: map[string]*ring{}, quiet: map[Edge]int{}}
}

// Add records one step: the counters now (golden.Edges.Snapshot) less
// those of the previous step. An edge quiet for EdgeKeep, and a service
// quiet for ServiceKeep, are dropped.
func (h *History) Add(now time.Time, totals []golden.Totals) {
	h.mu.Lock()
	defer h.mu.Unlock()
	end := now.Unix()
	bySvc := map[string]*slot{}
	for _, t := range totals {
		e := Edge{t.Caller, t.Service, t.Method}
		prev, seen := h.last[e]
		h.last[e] = t
		var s slot
		s.end = end
		for r, n := range t.Results {
			var p uint64
			if seen && r < len(prev.Results) {
				p = prev.Results[r]
			}
			d := uint32(n - p)
			s.calls += d
			if h.answered(golden.Result(r)) {
				s.answered += d
			}
		}
		for i, n := range t.Buckets {
			if seen {
				n -= prev.Buckets[i]
			}
			s.buckets[i] = uint32(n)
		}
		er := h.edges[e]
		if s.calls == 0 {
			if er == nil {
				continue
			}
			if h.quiet[e]++; h.quiet[e] >= len(er.slots) { // quiet for EdgeKeep
				delete(h.edges, e)
				delete(h.quiet, e)
				continue
			}
		} else {
			delete(h.quiet, e)
		}
		if er == nil {
			er = &ring{slots: make([]slot, EdgeKeep/Step)}
			h.edges[e] = er
		}
		er.push(s)
		sv := bySvc[t.Service]
		if sv == nil {
			sv = &slot{end: end}
			bySvc[t.Service] = sv
		}
		sv.calls += s.calls
		sv.answered += s.answered
		for i, n := range s.buckets {
			sv.buckets[i] += n
		}
	}
	for name, r := range h.services {
		s := bySvc[name]
		if s == nil {
			s = &slot{end: end}
			if r.window(end-int64(ServiceKeep/time.Second)).Calls == 0 {
				delete(h.services, name) // quiet for an hour
				continue
			}
		}
		r.push(*s)
		delete(bySvc, name)
	}
	for name, s := range bySvc {
		r := &ring{slots: make([]slot, ServiceKeep/Step)}
		r.push(*s)
		h.services[name] = r
	}
	if h.firstAt.IsZero() {
		h.firstAt = now
	}
	h.lastAt = now
}

// Covered is how much of the last d the steps cover: less than d while
// the history is younger than d.
func (h *History) Covered(d time.Duration) time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	return min(d, h.lastAt.Sub(h.firstAt))
}

// Span is a time range ending at the last step: its start (unix seconds,
// exclusive) and length.
func (h *History) span(d time.Duration) (since int64, seconds float64) {
	return h.lastAt.Add(-d).Unix(), d.Seconds()
}

// Services returns each service's window over the last d (at most
// ServiceKeep).
func (h *History) Services(d time.Duration) map[string]Window {
	h.mu.Lock()
	defer h.mu.Unlock()
	since, _ := h.span(min(d, ServiceKeep))
	out := make(map[string]Window, len(h.services))
	for name, r := range h.services {
		out[name] = r.window(since)
	}
	return out
}

// Edges returns each edge's window over the last d (at most EdgeKeep).
func (h *History) Edges(d time.Duration) map[Edge]Window {
	h.mu.Lock()
	defer h.mu.Unlock()
	since, _ := h.span(min(d, EdgeKeep))
	out := make(map[Edge]Window, len(h.edges))
	for e, r := range h.edges {
		if w := r.window(since); w.Calls > 0 {
			out[e] = w
		}
	}
	return out
}

// Point is one step of a service's history.
type Point struct {
	At     time.Time `json:"at"`
	Window Window    `json:"window"`
}

// Series returns service's steps over the last d (at most ServiceKeep),
// oldest first.
func (h *History) Series(service string, d time.Duration) []Point {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.services[service]
	if r == nil {
		return nil
	}
	since, _ := h.span(min(d, ServiceKeep))
	var out []Point
	for i := range r.slots {
		s := &r.slots[(r.next+i)%len(r.slots)]
		if s.end <= since {
			continue
		}
		w := Window{Calls: uint64(s.calls), Answered: uint64(s.answered), Buckets: make([]uint64, len(s.buckets))}
		for j, n := range s.buckets {
			w.Buckets[j] = uint64(n)
		}
		out = append(out, Point{At: time.Unix(s.end, 0), Window: w})
	}
	return slices.Clip(out)
}
