package relay

import (
	"context"

	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/conn"
	"github.com/meshrpc/mesh/internal/golden"
	"github.com/meshrpc/mesh/internal/routing"
	"github.com/meshrpc/mesh/internal/tracing"
	"github.com/meshrpc/mesh/router"
)

// HeaderInstance is the transport header that names the instance a call is
// for, set by the first meshd and read by the instance's own meshd.
const HeaderInstance = "mesh-instance"

// Config configures a Relay.
type Config struct {
	// Self is this meshd's routable address, as registered with its
	// instances: an instance at Self is delivered over its own connection.
	Self string
	// Registry answers where the instances of a service are.
	Registry discovery.Registry
	// Own lists the services the meshd serves itself (e.g. "hyperbahn"):
	// calls for them are not relayed.
	Own []string
	// Dial opens a connection to another meshd; its connections must use
	// this Relay as their Relayer.
	Dial func(ctx context.Context, addr string) (*conn.Conn, error)
	// Logger; default slog.Default().
	Logger *slog.Logger
	// Policies are the initial per-service policies (see SetPolicies).
	Policies router.Policies
	// Tracer records a span for each call this meshd relays (nil: none).
	Tracer *tracing.Tracer
	// Limits bound what a connection can make the relay hold (limits.go).
	Limits Limits
	// Allowed decides whether a caller may call a service (intentions); nil
	// allows every call.
	Allowed func(c *routing.Call) (ok bool, rule string)
	// Metrics is where the relay's collectors (its own, its Balancer's and
	// the calls per edge, internal/golden) are registered; nil: a registry
	// of its own, which no one reads.
	Metrics prometheus.Registerer
	// MetricCaps bound the labels of the calls per edge and of the
	// Balancer's series per instance and service.
	MetricCaps golden.Caps
	// NoEdges leaves calls uncounted per edge (mesh_calls_total): meshd's
	// ops view is off.
	NoEdges bool
}

// Relay is the conn.Relayer of every meshd connection.
type Relay struct {
	cfg   Config
	log   *slog.Logger
	own   map[string]bool
	peers *conn.Pool

	localMu   sync.RWMutex
	locals    map[string]*localInstance // by instance id
	byService map[string][]string       // service → ids of its local instances

	// bal's endpoints, breakers, budgets and policies are the relay's: it
	// is the stage every routed call goes through.
	bal                      *routing.Balancer
	prologue                 []entryCheck     // pipeline.go
	firstHop, lastHop, retry routing.Pipeline // pipeline.go

	tables        sync.Map     // *conn.Conn → *table: the calls in flight, per connection
	inflight      atomic.Int64 // calls in the tables
	limits        Limits
	savedTotal    atomic.Int64 // request bytes kept for retries
	saved         sync.Pool    // *[]byte: request frames kept for retries
	bufs          sync.Pool    // *[]byte: first frames being rewritten
	recent        recentCalls
	edges         *golden.Edges // calls per caller → service → method (golden.go)
	refusals      sync.Map      // refusalKey → *atomic.Int64
	refusalSeries atomic.Int64
	names         names

	draining atomic.Bool
	stats    counters
}

// counters count what the relay did.
type counters struct {
	relayed, refused, timedOut, rateLimited atomic.Int64
	badRequests, badAnswers                 atomic.Int64    // failed the edge check
	parked                                  [2]atomic.Int64 // waited for discover, connect (park.go)
	limited                                 [numLimits]atomic.Int64
}

// Stats are the relay's counters, for meshd's /status.
type Stats struct {
	Relayed  int64 // calls forwarded
	Refused  int64 // calls answered with an error by the relay
	TimedOut int64 // calls whose TTL ran out inside the relay
	Retried  int64 // attempts sent again to another instance
	// RateLimited counts calls refused by a rate or concurrency limit.
	RateLimited int64
	// BudgetExhausted counts retries refused by the retry budget.
	BudgetExhausted int64
}

// New returns a Relay.
func New(cfg Config) *Relay {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	r := &Relay{
		limits:    cfg.Limits.withDefaults(),
		cfg:       cfg,
		log:       cfg.Logger,
		own:       make(map[string]bool),
		locals:    make(map[string]*localInstance),
		byService: make(map[string][]string),
	}
	for _, s := range cfg.Own {
		r.own[s] = true
	}
	r.peers = conn.NewPool(cfg.Dial)
	var err error
	if r.bal, err = routing.NewBalancer(cfg.Policies, cfg.Logger); err != nil {
		r.log.Error("invalid policies ignored", "err", err)
	}
	r.pipelines()
	reg := cfg.Metrics
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	r.edges = golden.New(reg, cfg.MetricCaps, r.stages())
	r.bal.CapSeries(cfg.MetricCaps, r.edges.Overflowed)
	reg.MustRegister(r.bal, (*collector)(r))
	r.bufs.New = func() any { b := make([]byte, 0, 4096); return &b }
	return r
}

// SetPolicies replaces every service's policy. Invalid policies are refused
// with an error naming the service, and the ones in force stay.
func (r *Relay) SetPolicies(ps router.Policies) error { return r.bal.SetPolicies(ps) }

// Drain makes the relay decline new calls (callers retry elsewhere) while
// those in flight finish.
func (r *Relay) Drain() { r.draining.Store(true) }

// InFlight is the number of calls being relayed.
func (r *Relay) InFlight() int { return int(r.inflight.Load()) }

// Stats returns the relay's counters.
func (r *Relay) Stats() Stats {
	retried, exhausted := r.bal.Retries()
	return Stats{
		Relayed: r.stats.relayed.Load(), Refused: r.stats.refused.Load(), TimedOut: r.stats.timedOut.Load(),
		RateLimited: r.stats.rateLimited.Load(), Retried: retried, BudgetExhausted: exhausted,
	}
}

// Forget drops what the relay learned of instances no call found listed
// since before now-after (routing.Balancer.Forget).
func (r *Relay) Forget(now time.Time, after time.Duration) { r.bal.Forget(now, after) }

// SetZones tells the relay's balancer this meshd's zone and how many
// meshds (callers) each zone has (routing.Balancer.SetZones).
func (r *Relay) SetZones(local string, callers map[string]int) { r.bal.SetZones(local, callers) }

// Policy is the policy in force for service.
func (r *Relay) Policy(service string) router.Policy { return r.bal.Policy(service) }

// Breakers lists the circuit breakers of the instances the relay knows.
func (r *Relay) Breakers() []routing.Breaker { return r.bal.Breakers() }

// CallTotals are the counts of the calls that entered the mesh here, per
// edge (internal/golden).
func (r *Relay) CallTotals() []golden.Totals { return r.edges.Snapshot() }

// Peer is a connection to the meshd at addr (dialled if there is none).
func (r *Relay) Peer(addr string) (*conn.Conn, error) { return r.peers.Get(addr) }

// Peers lists the meshds this relay has connections to.
func (r *Relay) Peers() []string { return r.peers.Addrs() }

// OfferCall routes the first frame of a call (conn.Relayer): it runs the
// call's pipeline, then forwards the frame to where it decided.
func (r *Relay) OfferCall(from *conn.Conn, f *frame.Frame, req *frame.CallReq, frag *frame.Fragment) bool {
	if r.own[string(req.Service)] {
		return false
	}
	rc := new(relayed)
	c := &rc.call
	service, known := r.names.get(routing.RoutingName(req.Service, req.Headers))
	c.Reset(service, req.Headers)
	if m := frame.CallReqArg1(f.Payload, req); m != nil {
		c.Method, _ = r.names.get(m) // interned once routed (keepMethod)
	}
	c.AppHeaders = frame.CallReqArg2(f.Payload, req) // for L7 intentions; aliases the frame
	rc.lastHop = fromMeshd(from)
	var callerName string                              // "" for Anonymous and on a last hop
	c.Caller, callerName = callerOf(from, req.Headers) // who proved it, never what "cn" says
	// A call from an app enters the mesh here: the prologue (pipeline.go).
	if !rc.lastHop {
		rc.checkReq = true
		for _, e := range r.prologue {
			if err := e.check(r, from, rc, req, frag); err != nil {
				r.refuseCall(from, f, req, rc, e.name, err)
				return true
			}
		}
	}
	p := r.firstHop
	if rc.lastHop {
		p = r.lastHop
	}
	if err := p.Route(c); err != nil {
		if err == routing.ErrWait { // a first lookup, a dial: never on this read loop
			r.park(from, f, req, rc)
			return true
		}
		c.Release()
		r.refuseCall(from, f, req, rc, p.StoppedAt(c), err)
		return true
	}
	if !known {
		r.names.keep(c.Service) // a service that was routed to: worth keeping
	}
	if !rc.lastHop {
		r.keepMethod(c)
		rc.rec.edge = r.edgeOf(rc, f, req, true)
	}
	r.forward(from, f, req, rc, callerName)
	return true
}

// forward sends the first frame of a call to where its pipeline decided,
// and keeps the call in the tables of both connections. callerName is the
// proven identity the next meshd is told ("" for none).
func (r *Relay) forward(src *conn.Conn, f *frame.Frame, req *frame.CallReq, rc *relayed, callerName string) {
	c := &rc.call
	// dst and dstID are this attempt's for good: once the hedge is armed
	// below, a winning hedge may swap rc.dst and rc.dstID under rc.mu.
	dst, dstID := c.Conn, c.Conn.NewID()
	rc.src, rc.srcID, rc.dst, rc.dstID = src, f.ID, dst, dstID
	rc.checkRes = r.isLocal(c) // the answer comes from an app
	now := time.Now()
	rc.reqDone = req.Flags&frame.FlagMoreFragments == 0
	ttl, capped := r.ttlOf(req)
	rc.deadline = now.Add(ttl)

	bp := r.bufs.Get().(*[]byte)
	defer r.bufs.Put(bp)
	out := r.firstFrame((*bp)[:0], f, req, c, callerName)
	frame.SetIDs(out, dstID) // a full first frame may have been split in two (firstFrame)
	if capped {
		frame.SetCallReqTTL(out, uint32(ttl/time.Millisecond))
	}
	var tryTimeout, hedgeAfter time.Duration
	if !rc.lastHop {
		rc.attempt = r.bal.Send(c)
		rc.rec.at, rc.rec.service = now, c.Service
		rc.rec.setTrace(req.Tracing)
		rc.rec.caller = r.names.intern(c.Caller)
		rc.rec.add(c.Instance(), c.Choice())
		tryTimeout = r.bal.TryTimeout(c)
		frame.SetCallReqTTL(out, ttlMillis(rc.deadline, tryTimeout))
		if r.bal.CanRetry(c) {
			r.save(rc, f.Raw)
		}
		if rc.saved != nil {
			hedgeAfter = r.bal.HedgeAfter(c) // before the headers go below
		}
	}
	r.startSpan(rc, f, req, out, now)
	*bp = out
	// The headers alias the read loop's buffer, reused once OfferCall
	// returns; a retry points them at its saved copy.
	c.Headers, c.Caller, c.AppHeaders = nil, nil, nil

	r.track(rc)
	rc.mu.Lock()
	if !rc.done { // a connection can close, and finish the call, at any time
		ct := r.newTimer(rc, &rc.timer, expired)
		ct.tr = req.Tracing // req is reused by the read loop: a copy
		ct.start(ttl)
		if hedgeAfter > 0 {
			r.armHedge(rc, hedgeAfter)
		}
	}
	rc.mu.Unlock()
	r.watchAttempt(rc, dst, dstID, tryTimeout)

	if err := r.send(dst, out, !rc.lastHop); err != nil {
		code := frame.ErrCodeNetwork
		if slow(err) {
			code = frame.ErrCodeBusy
		}
		r.finish(rc, routing.Failed(code))
		r.refuse(src, rc.srcID, req.Tracing, code, "forwarding failed: "+err.Error())
		return
	}
	r.stats.relayed.Add(1)
}

// firstFrame appends the first frame as it goes out: on a first hop to
// another meshd with the instance's id and the caller's proven identity
// added as routing headers. A full first frame is split in two to make room
// (frame.AppendCallReqWithHeaders); one that cannot be (a farmhash checksum,
// a huge method) goes as it is, and the next meshd then picks among its
// local instances of the service and sees an anonymous caller.
func (r *Relay) firstFrame(out []byte, f *frame.Frame, req *frame.CallReq, c *routing.Call, callerName string) []byte {
	if inst := c.Instance(); inst.Addr != r.cfg.Self {
		var caller [2]string // none for Anonymous
		if callerName != "" {
			caller = [2]string{HeaderCaller, callerName}
		}
		if b, ok := frame.AppendCallReqWithHeaders(out, f, req, [2]string{HeaderInstance, inst.ID}, caller); ok {
			return b
		}
	}
	return append(out, f.Raw...)
}

// ttlOf is the time a call may take: its ttl, cut to Limits.MaxTTL
// (capped, and counted).
func (r *Relay) ttlOf(req *frame.CallReq) (ttl time.Duration, capped bool) {
	ttl = time.Duration(req.TTL) * time.Millisecond
	if ttl > r.limits.MaxTTL {
		r.stats.limited[limitTTL].Add(1)
		return r.limits.MaxTTL, true
	}
	return ttl, false
}

// ttlMillis is the ttl to forward: the time left until deadline, or less
// when a per-attempt timeout is shorter (the next hop then answers Timeout
// when the attempt runs out, and the relay can retry elsewhere). A ttl is
// never 0 on the wire: a call with less than 1ms left carries 1.
func ttlMillis(deadline time.Time, perTry time.Duration) uint32 {
	left := time.Until(deadline)
	if perTry > 0 && perTry < left {
		left = perTry
	}
	ms := max((left+time.Millisecond-1)/time.Millisecond, 1)
	return uint32(min(ms, 1<<32-1))
}

// Frame forwards the later frames of relayed calls (conn.Relayer).
func (r *Relay) Frame(from *conn.Conn, f *frame.Frame, frag *frame.Fragment) {
	switch f.Type {
	case frame.TypeCallReqContinue:
		rc := r.lookup(from, f.ID, false)
		if rc == nil {
			return // a call this meshd answered already, or a stray frame
		}
		rc.mu.Lock()
		if rc.done || rc.reqDone {
			rc.mu.Unlock()
			return
		}
		if rc.checkReq {
			if err := check(&rc.reqAsm, frag, &rc.arg1); err != nil {
				rc.mu.Unlock()
				r.stats.badRequests.Add(1)
				r.abandon(rc, frame.ErrCodeBadRequest, "malformed call: "+err.Error())
				return
			}
		}
		rc.reqDone = len(f.Payload) > 0 && f.Payload[0]&frame.FlagMoreFragments == 0
		if rc.reqDone {
			rc.uncountHalf()
		}
		r.keep(rc, f.Raw) // before its id is rewritten below
		dst, dstID := rc.dst, rc.dstID
		held := dst == nil && !rc.tooBig // parked (park.go): kept, sent when routed
		rc.mu.Unlock()
		if dst == nil {
			if !held {
				r.abandon(rc, frame.ErrCodeBusy, "the call's request outgrew what meshd holds while its route waits")
			}
			return
		}
		frame.SetID(f.Raw, dstID)
		if err := r.send(dst, f.Raw, !rc.lastHop); err != nil {
			// The callee missed a fragment: the call cannot go on.
			r.abandon(rc, frame.ErrCodeBusy, "forwarding failed: "+err.Error())
		}
	case frame.TypeCancel:
		rc := r.lookup(from, f.ID, false)
		if rc == nil {
			return
		}
		rc.mu.Lock()
		dst, dstID := rc.dst, rc.dstID
		rc.mu.Unlock()
		r.finish(rc, routing.CallerGone) // forgotten before the callee hears of it
		if dst != nil {                  // nil: parked, no callee yet
			frame.SetID(f.Raw, dstID)
			r.send(dst, f.Raw, !rc.lastHop)
		}
	case frame.TypeCallRes, frame.TypeCallResContinue, frame.TypeError:
		rc := r.lookup(from, f.ID, true)
		if rc == nil {
			return // the call timed out or was cancelled here
		}
		var code frame.ErrCode
		if f.Type == frame.TypeError && len(f.Payload) > 0 {
			code = frame.ErrCode(f.Payload[0])
		}
		if rc.hedged.Load() && r.settleHedge(rc, from, f.ID, f.Type == frame.TypeError, code) {
			return // a hedged call's attempt that failed while the other goes on, or one that lost
		}
		if f.Type == frame.TypeError && len(f.Payload) > 0 && r.retryAfter(rc, from, f.ID, code) {
			return // another instance gets the call; the caller never sees this error
		}
		if f.Type == frame.TypeError && !rc.lastHop && fromMeshd(from) {
			if res := r.remoteRefusal(f.Payload); res != 0 {
				rc.mu.Lock()
				rc.refusal = res // finish counts the call by it
				rc.mu.Unlock()
			}
		}
		if f.Type != frame.TypeError && rc.checkRes {
			if err := check(&rc.resAsm, frag, nil); err != nil {
				r.stats.badAnswers.Add(1)
				r.abandon(rc, frame.ErrCodeUnexpected, "the instance answered with a malformed response: "+err.Error())
				return
			}
		}
		if f.Type == frame.TypeCallRes && len(f.Payload) > 1 {
			rc.appErr = frame.ResCode(f.Payload[1]) != frame.ResOK
		}
		frame.SetID(f.Raw, rc.srcID)
		if err := rc.src.TryWrite(f.Raw); err != nil { // the caller is not reading its answers
			r.slowPeer(rc.src, err)
			r.finish(rc, routing.CallerGone)
			return
		}
		switch {
		case f.Type == frame.TypeError:
			r.finish(rc, routing.Failed(frame.ErrCode(f.Payload[0])))
		case f.Payload[0]&frame.FlagMoreFragments == 0:
			r.finish(rc, routing.Answered(rc.appErr))
		}
	}
}

// expired is a call's TTL timer firing: the call ran out of time in the
// relay, so the caller hears a timeout and the callee a cancel.
func expired(ct *callTimer) {
	r, rc, t := ct.r, ct.rc, ct.tr
	if !r.finish(rc, routing.Failed(frame.ErrCodeTimeout)) {
		return
	}
	r.stats.timedOut.Add(1)
	r.sendError(rc.src, rc.srcID, t, frame.ErrCodeTimeout, "call timed out in the mesh")
	rc.mu.Lock()
	dst, dstID := rc.dst, rc.dstID
	rc.mu.Unlock()
	if dst == nil {
		return // it never left this meshd (park.go)
	}
	if b, err := frame.AppendCancel(nil, dstID, frame.Cancel{Tracing: t, Why: []byte("ttl expired")}); err == nil {
		r.send(dst, b, false)
	}
}

// Closed fails the calls relayed through a closed connection (conn.Relayer):
// only its own table is read.
func (r *Relay) Closed(c *conn.Conn, err error) {
	r.peers.Forget(c)
	v, ok := r.tables.LoadAndDelete(c)
	if !ok {
		return
	}
	sent, took := v.(*table).drain()
	for _, e := range sent { // calls sent to c: the callee was lost
		if r.dropAttempt(e.rc, c, e.id, frame.ErrCodeNetwork) || r.retryAfter(e.rc, c, e.id, frame.ErrCodeNetwork) {
			continue
		}
		if r.finish(e.rc, routing.Failed(frame.ErrCodeNetwork)) {
			r.sendError(e.rc.src, e.rc.srcID, frame.Tracing{}, frame.ErrCodeNetwork, "connection to the callee was lost")
		}
	}
	for _, e := range took { // calls c's peer sent: the caller went away
		if !r.finish(e.rc, routing.CallerGone) {
			continue
		}
		e.rc.mu.Lock()
		dst, dstID := e.rc.dst, e.rc.dstID
		e.rc.mu.Unlock()
		if dst == nil {
			continue // parked: no callee heard of it
		}
		if b, err := frame.AppendCancel(nil, dstID, frame.Cancel{Why: []byte("caller went away")}); err == nil {
			r.send(dst, b, false)
		}
	}
}
