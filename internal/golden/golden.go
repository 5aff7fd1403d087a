package golden

import (
	"cmp"
	"encoding/binary"
	"encoding/hex"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.opentelemetry.io/otel/trace"

	"github.com/meshrpc/mesh/frame"
)

// The label values that stand for many.
const (
	// Other is the value of a label past its cap.
	Other = "_other"
	// Unknown is the service (and method) of a call refused before its
	// name was known to be a service: made-up names are not labels.
	Unknown = "_unknown"
)

// Caps bound the distinct values of each label; the zero value of a field
// is its default.
type Caps struct {
	Callers           int // distinct callers
	Services          int // distinct services
	MethodsPerService int // distinct methods of one service
	Edges             int // distinct caller → service → method edges
	// Instances bounds the per-instance series (routing.Balancer's):
	// instances past it are counted together under "_other".
	Instances int
}

// The defaults of Caps.
const (
	DefaultMaxCallers           = 1000
	DefaultMaxServices          = 2000
	DefaultMaxMethodsPerService = 200
	DefaultMaxEdges             = 20000
	DefaultMaxInstances         = 10000
)

// WithDefaults is c with each zero field at its default.
func (c Caps) WithDefaults() Caps {
	c.Callers = cmp.Or(c.Callers, DefaultMaxCallers)
	c.Services = cmp.Or(c.Services, DefaultMaxServices)
	c.MethodsPerService = cmp.Or(c.MethodsPerService, DefaultMaxMethodsPerService)
	c.Edges = cmp.Or(c.Edges, DefaultMaxEdges)
	c.Instances = cmp.Or(c.Instances, DefaultMaxInstances)
	return c
}

// Buckets are the latency histogram's upper bounds, in seconds: from a
// local hop's tenth of a millisecond to the ten seconds past which a call
// is an outage.
var Buckets = [...]float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// Result is how a call ended, as its result label says.
type Result uint8

// The results of answered calls, by the answer (an error code is the
// callee's or a meshd's on the way); refusals follow, one per stage given
// to New.
const (
	OK Result = iota
	AppError
	Timeout
	Cancelled // the caller gave up first
	Busy
	Declined
	Unexpected
	BadRequest
	Network
	Unhealthy
	OtherError  // a code TChannel does not define
	RefusedElse // a refusal by a stage not given to New
	numAnswers
)

var answerNames = [numAnswers]string{"ok", "app_error", "timeout", "cancelled", "busy", "declined", "unexpected", "bad_request", "network", "unhealthy", "other_error", "refused_other"}

// Answer is the result of a call answered with code (0: a call response,
// an application error when appErr).
func Answer(code frame.ErrCode, appErr bool) Result {
	switch {
	case code == 0 && appErr:
		return AppError
	case code == 0:
		return OK
	case code == frame.ErrCodeCancelled:
		return Cancelled
	case code >= frame.ErrCodeTimeout && code <= frame.ErrCodeUnhealthy:
		return Timeout + Result(code-frame.ErrCodeTimeout)
	}
	return OtherError
}

// Edges counts calls per edge. Its methods are safe for concurrent use;
// Edge and Done allocate nothing once an edge has been seen.
type Edges struct {
	caps    Caps
	results []string // label values by Result
	stages  map[string]Result
	calls   *prometheus.CounterVec
	latency *prometheus.HistogramVec
	over    *prometheus.CounterVec // by label

	mu       sync.RWMutex
	byKey    map[key]*Edge // what a call names → its edge, up to 2 × Caps.Edges keys
	byLabels map[key]*Edge // label values (after caps) → edge
	callers  map[string]bool
	services map[string]map[string]bool // service → its methods
}

type key struct{ caller, service, method string }

// New returns Edges whose collectors are registered with reg; stages names
// the stages that can refuse a call, each a result "refused_<stage>".
func New(reg prometheus.Registerer, caps Caps, stages []string) *Edges {
	e := &Edges{
		caps:     caps.WithDefaults(),
		results:  answerNames[:],
		stages:   make(map[string]Result),
		byKey:    make(map[key]*Edge),
		byLabels: make(map[key]*Edge),
		callers:  make(map[string]bool),
		services: make(map[string]map[string]bool),
	}
	for _, s := range stages {
		if _, ok := e.stages[s]; !ok {
			e.stages[s] = Result(len(e.results))
			e.results = append(e.results, "refused_"+s)
		}
	}
	e.calls = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mesh_calls_total",
		Help: "Calls that entered the mesh at this meshd, by caller (its proven identity), service, method and result (answers, and refusals by stage).",
	}, []string{"caller", "service", "method", "result"})
	e.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "mesh_call_duration_seconds",
		Help:    "Time from a call's first frame at this meshd to the end of its answer or refusal, retries included; exemplars carry the trace id of sampled calls.",
		Buckets: Buckets[:],
	}, []string{"caller", "service", "method"})
	e.over = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mesh_metrics_overflow_total",
		Help: "Calls counted under _other because a label reached its cap, by label.",
	}, []string{"label"})
	reg.MustRegister(e.calls, e.latency, e.over)
	return e
}

// Overflowed counts one more value of label counted under Other by a
// collector outside Edges (routing.Balancer's "instance" and "service").
func (e *Edges) Overflowed(label string) { e.over.WithLabelValues(label).Inc() }

// Refused is the result of a call refused by stage.
func (e *Edges) Refused(stage string) Result {
	if r, ok := e.stages[stage]; ok {
		return r
	}
	return RefusedElse
}

// Stage is the stage a refusal result names, and whether it names one.
func (e *Edges) Stage(r Result) (string, bool) {
	if r < numAnswers || int(r) >= len(e.results) {
		return "", false
	}
	return e.results[r][len("refused_"):], true
}

// String is r's label value.
func (e *Edges) String(r Result) string {
	if int(r) < len(e.results) {
		return e.results[r]
	}
	return strconv.Itoa(int(r))
}

// Edge is the edge of a call from caller to method of service.
func (e *Edges) Edge(caller, service, method string) *Edge {
	k := key{caller, service, method}
	e.mu.RLock()
	ed := e.byKey[k]
	e.mu.RUnlock()
	if ed != nil {
		return ed
	}
	return e.add(k)
}

// add makes the edge of k, its labels within the caps.
func (e *Edges) add(k key) *Edge {
	e.mu.Lock()
	defer e.mu.Unlock()
	if ed := e.byKey[k]; ed != nil {
		return ed
	}
	l := key{Label(k.caller), Label(k.service), Label(k.method)}
	if !e.callers[l.caller] {
		if len(e.callers) < e.caps.Callers {
			e.callers[l.caller] = true
		} else {
			l.caller = Other
			e.over.WithLabelValues("caller").Inc()
		}
	}
	methods, ok := e.services[l.service]
	if !ok {
		if len(e.services) < e.caps.Services {
			methods = make(map[string]bool)
			e.services[l.service] = methods
		} else {
			l.service, l.method = Other, Other
			e.over.WithLabelValues("service").Inc()
		}
	}
	if methods != nil && !methods[l.method] {
		if len(methods) < e.caps.MethodsPerService {
			methods[l.method] = true
		} else {
			l.method = Other
			e.over.WithLabelValues("method").Inc()
		}
	}
	ed := e.byLabels[l]
	if ed == nil {
		if len(e.byLabels) >= e.caps.Edges {
			l = key{Other, Other, Other}
			e.over.WithLabelValues("edge").Inc()
			ed = e.byLabels[l]
		}
		if ed == nil {
			ed = &Edge{Caller: l.caller, Service: l.service, Method: l.method, edges: e,
				calls: make([]atomic.Pointer[counter], len(e.results))}
			ed.latency = e.latency.WithLabelValues(l.caller, l.service, l.method)
			e.byLabels[l] = ed
		}
	}
	if len(e.byKey) < 2*e.caps.Edges { // beyond, unseen names take this lock each call, and leave nothing
		e.byKey[k] = ed
	}
	return ed
}

// Label is s as a label value: Prometheus takes only valid UTF-8 (a
// client_golang metric panics on anything else), and a method or a name
// off the wire can be any bytes.
func Label(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// Edge is one caller → service → method edge, its label values after the
// caps.
type Edge struct {
	Caller, Service, Method string

	edges   *Edges
	calls   []atomic.Pointer[counter] // by Result, made when first used
	latency prometheus.Observer
}

type counter struct{ prometheus.Counter }

// Done counts one call on the edge that ended as r after d; traceID, when
// valid, is the trace of a sampled call, kept as the latency's exemplar.
func (ed *Edge) Done(r Result, d time.Duration, traceID trace.TraceID) {
	if int(r) >= len(ed.calls) {
		r = OtherError
	}
	c := ed.calls[r].Load()
	if c == nil {
		c = &counter{ed.edges.calls.WithLabelValues(ed.Caller, ed.Service, ed.Method, ed.edges.results[r])}
		ed.calls[r].CompareAndSwap(nil, c)
	}
	c.Inc()
	if !traceID.IsValid() {
		ed.latency.Observe(d.Seconds())
		return
	}
	ed.latency.(prometheus.ExemplarObserver).ObserveWithExemplar(d.Seconds(), prometheus.Labels{"trace_id": TraceID(traceID)})
}

// TraceID is a trace id as an exemplar's trace_id label says it, as trace
// backends show it: 32 lower-case hex digits, or 16 for a 64-bit id (high
// half zero).
func TraceID(id trace.TraceID) string {
	if binary.BigEndian.Uint64(id[:8]) == 0 {
		return hex.EncodeToString(id[8:])
	}
	return hex.EncodeToString(id[:])
}

// Totals are one edge's counts since meshd started.
type Totals struct {
	Caller, Service, Method string
	// Results counts the calls by Result (Edges.String names each).
	Results []uint64
	// Buckets counts the calls by latency bucket (not cumulative): the
	// last is past the largest of Buckets.
	Buckets [len(Buckets) + 1]uint64
	// Seconds is the calls' latency summed.
	Seconds float64
}

// Snapshot returns every edge's totals, read from the same counters
// /metrics serves.
func (e *Edges) Snapshot() []Totals {
	e.mu.RLock()
	edges := make([]*Edge, 0, len(e.byLabels))
	for _, ed := range e.byLabels {
		edges = append(edges, ed)
	}
	e.mu.RUnlock()
	out := make([]Totals, 0, len(edges))
	var m dto.Metric
	for _, ed := range edges {
		t := Totals{Caller: ed.Caller, Service: ed.Service, Method: ed.Method, Results: make([]uint64, len(ed.calls))}
		for r := range ed.calls {
			if c := ed.calls[r].Load(); c != nil {
				m.Reset()
				c.Write(&m)
				t.Results[r] = uint64(m.GetCounter().GetValue())
			}
		}
		m.Reset()
		ed.latency.(prometheus.Metric).Write(&m)
		var below uint64
		for i, b := range m.GetHistogram().GetBucket() {
			if i < len(Buckets) {
				t.Buckets[i] = b.GetCumulativeCount() - below
				below = b.GetCumulativeCount()
			}
		}
		t.Buckets[len(Buckets)] = m.GetHistogram().GetSampleCount() - below
		t.Seconds = m.GetHistogram().GetSampleSum()
		out = append(out, t)
	}
	return out
}

// Answered reports whether r is an answer the service meant: ok or an
// application error, what the success rate counts.
func Answered(r Result) bool { return r == OK || r == AppError }

// Names lists the label value of every result, by Result.
func (e *Edges) Names() []string { return slices.Clone(e.results) }
