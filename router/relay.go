package router

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/conn"
	"github.com/meshrpc/mesh/internal/tracing"
)

// HeaderInstance is the transport header that names the instance a call is
// for, set by the first meshd and read by the instance's own meshd.
const HeaderInstance = "mesh-instance"

// Config configures a Router.
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
	// this Router as their Relayer.
	Dial func(ctx context.Context, addr string) (*conn.Conn, error)
	// Logger; default slog.Default().
	Logger *slog.Logger
	// Policies are the initial per-service policies (see SetPolicies).
	Policies Policies
	// Tracer records a span for each call this meshd relays (nil: none).
	Tracer *tracing.Tracer
}

// Router is the conn.Relayer of every meshd connection.
type Router struct {
	cfg   Config
	log   *slog.Logger
	own   map[string]bool
	peers *peers

	localMu   sync.RWMutex
	local     map[string]*conn.Conn // instance id → the app's connection
	byService map[string][]string   // service → ids of its local instances

	// bal's endpoints, breakers, budgets and policies are the router's: it
	// is the stage every routed call goes through.
	bal   *Balancer
	gates Pipeline // the first hop's checks before discovery: kill switch, caller limit
	pick  Pipeline // discovery, then the Balancer
	calls sync.Pool

	mu  sync.Mutex
	in  map[callKey]*relayed // by the caller's connection and id
	out map[callKey]*relayed // by the callee's connection and our id
	// saved: *[]byte copies of first frames kept for retries
	saved    sync.Pool
	svcStats sync.Map // service → *serviceStats
	recent   recentCalls
	names    names
	bufs     sync.Pool

	draining atomic.Bool
	stats    Stats
}

// Stats counts what the router did.
type Stats struct {
	Relayed  atomic.Int64 // calls forwarded
	Refused  atomic.Int64 // calls answered with an error by the router
	TimedOut atomic.Int64 // calls whose TTL ran out inside the relay
	Retried  atomic.Int64 // attempts sent again to another instance
	// RateLimited counts calls refused by a rate or concurrency limit.
	RateLimited atomic.Int64
	// BudgetExhausted counts retries refused by the retry budget.
	BudgetExhausted atomic.Int64
}

type callKey struct {
	c  *conn.Conn
	id uint32
}

// relayed is one call in flight through this meshd.
type relayed struct {
	src, dst     *conn.Conn
	srcID, dstID uint32
	reqDone      bool // the request's last frame went out
	timer        *time.Timer
	ep           *endpoint // the instance's endpoint; nil on a last hop
	start        time.Time // of the current attempt
	done         bool      // finished; guarded by Router.mu

	// For retries (set when the call may be retried): the original first
	// frame, what routing needs to pick again, and what was tried.
	retry    *retryState
	deadline time.Time
	admitted *limits       // the local-delivery limits this call holds a place in
	appErr   bool          // the answer is an application error
	rec      record        // the routing decisions, for explanations; guarded by Router.mu
	trace    *hopTrace     // this hop's span to be, when the call is traced; guarded by Router.mu
	hop      frame.Tracing // the tracing field this hop sends on (retries reuse it)
	attempt  *time.Timer   // ends the current attempt at the per-attempt timeout
}

// outcome is how one attempt ended, as its instance's endpoint learns it.
type outcome struct {
	judged bool          // false: the caller cancelled, which says nothing of the instance
	code   frame.ErrCode // the error frame's code; 0 when answered
	appErr bool          // answered with an application error (still an answer)
}

// failed reports whether the outcome counts against the instance.
func (o outcome) failed() bool { return o.judged && failureCode(o.code) }

var unjudged = outcome{}

func answered(appErr bool) outcome       { return outcome{judged: true, appErr: appErr} }
func errored(code frame.ErrCode) outcome { return outcome{judged: true, code: code} }

// failureCode reports whether an error frame's code counts against the
// instance (its breaker and outlier ejection) rather than the call.
func failureCode(c frame.ErrCode) bool {
	switch c {
	case frame.ErrCodeTimeout, frame.ErrCodeNetwork, frame.ErrCodeUnexpected, frame.ErrCodeBusy, frame.ErrCodeUnhealthy:
		return true
	}
	return false
}

// New returns a Router.
func New(cfg Config) *Router {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	r := &Router{
		cfg:       cfg,
		log:       cfg.Logger,
		own:       make(map[string]bool),
		local:     make(map[string]*conn.Conn),
		byService: make(map[string][]string),
		in:        make(map[callKey]*relayed),
		out:       make(map[callKey]*relayed),
	}
	for _, s := range cfg.Own {
		r.own[s] = true
	}
	r.peers = newPeers(cfg.Dial)
	var err error
	if r.bal, err = NewBalancer(cfg.Policies, cfg.Logger); err != nil {
		r.log.Error("invalid policies ignored", "err", err)
	}
	r.gates = Pipeline{callerGate{r}}
	r.pick = Pipeline{Discover{cfg.Registry}, r.bal}
	r.calls.New = func() any { return new(Call) }
	r.bufs.New = func() any { b := make([]byte, 0, 4096); return &b }
	return r
}

// AddLocal makes a local instance deliverable over c, the app's connection.
func (r *Router) AddLocal(inst discovery.Instance, c *conn.Conn) {
	r.localMu.Lock()
	defer r.localMu.Unlock()
	if _, ok := r.local[inst.ID]; !ok {
		r.byService[inst.Service] = append(slices.Clone(r.byService[inst.Service]), inst.ID)
	}
	r.local[inst.ID] = c
}

// RemoveLocal forgets a local instance.
func (r *Router) RemoveLocal(inst discovery.Instance) {
	r.localMu.Lock()
	defer r.localMu.Unlock()
	delete(r.local, inst.ID)
	ids := slices.DeleteFunc(slices.Clone(r.byService[inst.Service]), func(id string) bool { return id == inst.ID })
	if len(ids) == 0 {
		delete(r.byService, inst.Service)
	} else {
		r.byService[inst.Service] = ids
	}
}

// MeshdRole is the init header value that marks a connection between two
// meshds ("mesh_role": "meshd"). A call arriving on such a connection is on
// its last hop: it is delivered to a local instance, never forwarded again.
const (
	InitRole  = "mesh_role"
	MeshdRole = "meshd"
)

// SetPolicies replaces every service's policy. Invalid policies are refused
// with an error naming the service, and the ones in force stay.
func (r *Router) SetPolicies(ps Policies) error { return r.bal.SetPolicies(ps) }

// Drain makes the router decline new calls (callers retry elsewhere) while
// those in flight finish.
func (r *Router) Drain() { r.draining.Store(true) }

// InFlight is the number of calls being relayed.
func (r *Router) InFlight() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.out)
}

// Stats returns the router's counters.
func (r *Router) Stats() *Stats { return &r.stats }

// Peers lists the meshds this router has connections to.
func (r *Router) Peers() []string { return r.peers.list() }

// OfferCall routes the first frame of a call (conn.Relayer).
func (r *Router) OfferCall(from *conn.Conn, f *frame.Frame, req *frame.CallReq) bool {
	if r.own[string(req.Service)] {
		return false
	}
	if r.draining.Load() {
		r.refuse(from, f.ID, req.Tracing, frame.ErrCodeDeclined, "meshd is draining")
		return true
	}
	c := r.newCall(req)
	defer r.calls.Put(c)
	lastHop := from.Peer().Headers[InitRole] == MeshdRole
	if !lastHop { // the caller's own meshd
		if err := r.gates.Route(c); err != nil {
			r.refuseWith(from, f.ID, req, err)
			return true
		}
	}
	dst, addHeader, ep, err := r.route(req, c, lastHop)
	if err != nil {
		r.refuseWith(from, f.ID, req, err)
		return true
	}
	lim := c.lim(r.bal)
	if addHeader == "" { // delivered to an instance on this host
		if err := (admission{r}).Route(c); err != nil {
			r.refuseWith(from, f.ID, req, err)
			return true
		}
	} else {
		lim = nil
	}
	r.forward(from, dst, f, req, addHeader, ep, lim, &c.choice)
	return true
}

// newCall takes a Call from the pool for req.
func (r *Router) newCall(req *frame.CallReq) *Call {
	c := r.calls.Get().(*Call)
	caller, _ := req.Headers.Get(frame.HeaderCallerName)
	key, sharded := req.Headers.Get(frame.HeaderShardKey)
	if sharded && key == nil {
		key = []byte{}
	}
	c.Reset(r.names.intern(req.Service), caller, key)
	return c
}

// route picks the connection a call goes out on: on a last hop the local
// instance (deliver), else the stages' pick, connected to; an instance found
// unreachable is excluded and the Balancer picks again. addHeader is the
// instance id to add as a routing header ("" when the call is on its last
// hop); ep is the chosen instance's endpoint (nil on a last hop), which
// learns how the call went.
func (r *Router) route(req *frame.CallReq, c *Call, lastHop bool) (dst *conn.Conn, addHeader string, ep *endpoint, err error) {
	if lastHop {
		dst, code, why := r.deliver(c.Service, req)
		if dst == nil {
			return nil, "", nil, &frame.Error{Code: code, Message: why}
		}
		return dst, "", nil, nil
	}
	if err := r.pick.Route(c); err != nil {
		return nil, "", nil, err
	}
	var lastErr error
	for range c.Instances {
		inst, ep := c.Instance(), c.eps[c.Picked]
		if inst.Addr == r.cfg.Self {
			if dst := r.localConn(inst.ID); dst != nil {
				return dst, "", ep, nil
			}
		} else if dst, err := r.peers.get(inst.Addr); err == nil {
			return dst, inst.ID, ep, nil
		} else {
			lastErr = err
		}
		if c.Picked >= 64 {
			break
		}
		c.Exclude()
		if err := r.bal.Route(c); err != nil {
			if lastErr != nil {
				err.(*frame.Error).Message += ": " + lastErr.Error()
			}
			return nil, "", nil, err
		}
	}
	why := fmt.Sprintf("none of the %d instances of service %q is reachable", len(c.Instances), c.Service)
	if lastErr != nil {
		why += ": " + lastErr.Error()
	}
	return nil, "", nil, &frame.Error{Code: frame.ErrCodeDeclined, Message: why}
}

// refuseWith answers a call a stage refused.
func (r *Router) refuseWith(c *conn.Conn, id uint32, req *frame.CallReq, err error) {
	ref, ok := err.(*frame.Error)
	if !ok {
		ref = &frame.Error{Code: frame.ErrCodeUnexpected, Message: err.Error()}
	}
	r.refuseCall(c, id, req, ref.Code, ref.Message)
}

// callerGate is the first hop's stage before discovery: the kill switch,
// then the caller's rate limit.
type callerGate struct{ r *Router }

func (g callerGate) Route(c *Call) error {
	lim := c.lim(g.r.bal)
	if lim.blocked(c.Caller) {
		g.r.serviceStats(c.Service).killSwitched.Add(1)
		return frame.Errorf(frame.ErrCodeDeclined, "calls from %q to %q are blocked (kill switch)", c.Caller, c.Service)
	}
	if !lim.callerAllowed(c.Caller, c.Now) {
		g.r.stats.RateLimited.Add(1)
		g.r.serviceStats(c.Service).rateLimited.Add(1)
		return frame.Errorf(frame.ErrCodeBusy, "caller %q is over its limit of %g calls/s to %q", c.Caller, lim.policy.CallerRateLimit, c.Service)
	}
	return nil
}

// admission is the stage of calls delivered to an instance on this host:
// the service's rate and concurrency limits here.
type admission struct{ r *Router }

func (a admission) Route(c *Call) error {
	if ok, why := c.lim(a.r.bal).admit(c.Now); !ok {
		a.r.stats.RateLimited.Add(1)
		a.r.serviceStats(c.Service).rateLimited.Add(1)
		return frame.Errorf(frame.ErrCodeBusy, "service %q on this host: %s", c.Service, why)
	}
	return nil
}

// deliver picks the local instance for a call another meshd sent here: the
// one its routing header names, or (when the header could not be added, or
// that instance just left) any local instance of the service.
func (r *Router) deliver(service string, req *frame.CallReq) (*conn.Conn, frame.ErrCode, string) {
	if id, ok := req.Headers.Get(HeaderInstance); ok {
		if c := r.localConn(string(id)); c != nil {
			return c, 0, ""
		}
	}
	r.localMu.RLock()
	ids := r.byService[service]
	r.localMu.RUnlock()
	if len(ids) > 0 {
		id := ids[r.bal.counter(service).Add(1)%uint64(len(ids))]
		if c := r.localConn(id); c != nil {
			return c, 0, ""
		}
	}
	return nil, frame.ErrCodeDeclined, fmt.Sprintf("service %q has no instance on this host any more", service)
}

func (r *Router) localConn(id string) *conn.Conn {
	r.localMu.RLock()
	c := r.local[id]
	r.localMu.RUnlock()
	return c
}

// forward sends the first frame of a call on dst and remembers the call.
func (r *Router) forward(src, dst *conn.Conn, f *frame.Frame, req *frame.CallReq, addHeader string, ep *endpoint, lim *limits, ch *choice) {
	rc := &relayed{src: src, srcID: f.ID, dst: dst, dstID: dst.NewID(), ep: ep, start: time.Now(), admitted: lim}
	if ep != nil {
		ep.pending.Add(1)
		rc.rec.at, rc.rec.service, rc.rec.tracing = rc.start, ep.service, req.Tracing
		caller, _ := req.Headers.Get(frame.HeaderCallerName)
		rc.rec.setCaller(caller)
		rc.rec.add(ep, ep.addr, *ch)
	}
	rc.reqDone = req.Flags&frame.FlagMoreFragments == 0

	bp := r.bufs.Get().(*[]byte)
	defer r.bufs.Put(bp)
	out := *bp
	if addHeader == "" {
		out = append(out[:0], f.Raw...)
	} else {
		var ok bool
		if out, ok = withHeader(out[:0], f, req, HeaderInstance, addHeader); !ok {
			// No room in a full first frame: the next meshd picks among its
			// local instances of the service instead.
			out = append(out[:0], f.Raw...)
		}
	}
	ttl := time.Duration(req.TTL) * time.Millisecond
	rc.deadline = rc.start.Add(ttl)
	binary.BigEndian.PutUint32(out[4:8], rc.dstID)
	r.startSpan(rc, f, req, out)
	var pol Policy // the service's policy, on the hop that chose the instance
	if ep != nil {
		pol = r.bal.policies.limits(ep.service).policy
		setTTL(out, rc.deadline, pol.TryTimeout.D())
		r.bal.budget(ep.service).deposit()
		rc.retry = r.retryState(f, req, ep, pol.MaxAttempts)
	}
	*bp = out

	r.mu.Lock()
	r.in[callKey{src, rc.srcID}] = rc // continue frames and cancels find it; finish removes it
	r.out[callKey{dst, rc.dstID}] = rc
	r.mu.Unlock()
	tracing := req.Tracing // req is reused by the read loop: copy what the timer needs
	rc.timer = time.AfterFunc(ttl, func() { r.expire(rc, tracing) })
	r.watchAttempt(rc, rc.dstID, pol.TryTimeout.D())

	if err := dst.Write(out); err != nil {
		r.finish(rc, errored(frame.ErrCodeNetwork))
		r.refuse(src, rc.srcID, req.Tracing, frame.ErrCodeNetwork, "forwarding failed: "+err.Error())
		return
	}
	r.stats.Relayed.Add(1)
}

// setTTL rewrites a call req frame's ttl to the time left until deadline,
// or less when a per-attempt timeout is shorter: the next hop then answers
// Timeout when the attempt runs out, and the relay can retry elsewhere.
// A ttl is never 0 on the wire: a call with less than 1ms left carries 1.
func setTTL(f []byte, deadline time.Time, perTry time.Duration) {
	left := time.Until(deadline)
	if perTry > 0 && perTry < left {
		left = perTry
	}
	ms := max((left+time.Millisecond-1)/time.Millisecond, 1)
	binary.BigEndian.PutUint32(f[frame.HeaderSize+1:], uint32(min(ms, 1<<32-1)))
}

// withHeader appends a copy of call req frame f with key=value added to its
// transport headers. It reports false if the result would not fit a frame.
func withHeader(dst []byte, f *frame.Frame, req *frame.CallReq, key, value string) ([]byte, bool) {
	p := f.Payload
	hdrOff := 1 + 4 + frame.TracingSize + 1 + len(req.Service)
	hdrLen := len(req.Headers)
	if hdrLen == 0 || req.Headers.Len() >= frame.MaxHeaders {
		return dst, false
	}
	size := len(f.Raw) + 2 + len(key) + len(value)
	if size > frame.MaxFrameSize {
		return dst, false
	}
	dst = append(dst, f.Raw[:frame.HeaderSize]...)
	dst[0], dst[1] = byte(size>>8), byte(size)
	dst = append(dst, p[:hdrOff]...)
	dst = append(dst, p[hdrOff]+1) // one more header
	dst = append(dst, p[hdrOff+1:hdrOff+hdrLen]...)
	dst = append(dst, byte(len(key)))
	dst = append(dst, key...)
	dst = append(dst, byte(len(value)))
	dst = append(dst, value...)
	return append(dst, p[hdrOff+hdrLen:]...), true
}

// Frame forwards the later frames of relayed calls (conn.Relayer).
func (r *Router) Frame(from *conn.Conn, f *frame.Frame) {
	switch f.Type {
	case frame.TypeCallReqContinue:
		r.mu.Lock()
		rc := r.in[callKey{from, f.ID}]
		if rc == nil || rc.reqDone {
			r.mu.Unlock()
			return // a call this meshd answered already, or a stray frame
		}
		rc.reqDone = len(f.Payload) > 0 && f.Payload[0]&frame.FlagMoreFragments == 0
		if rc.retry != nil {
			rc.retry.keep(f.Raw) // before its id is rewritten below
		}
		dst, dstID := rc.dst, rc.dstID
		r.mu.Unlock()
		binary.BigEndian.PutUint32(f.Raw[4:8], dstID)
		dst.Write(f.Raw)
	case frame.TypeCancel:
		r.mu.Lock()
		rc := r.in[callKey{from, f.ID}]
		var dst *conn.Conn
		var dstID uint32
		if rc != nil {
			dst, dstID = rc.dst, rc.dstID
		}
		r.mu.Unlock()
		if rc != nil {
			binary.BigEndian.PutUint32(f.Raw[4:8], dstID)
			dst.Write(f.Raw)
			r.finish(rc, unjudged)
		}
	case frame.TypeCallRes, frame.TypeCallResContinue, frame.TypeError:
		r.mu.Lock()
		rc := r.out[callKey{from, f.ID}]
		r.mu.Unlock()
		if rc == nil {
			return // the call timed out or was cancelled here
		}
		if f.Type == frame.TypeError && len(f.Payload) > 0 && r.retryAfter(rc, frame.ErrCode(f.Payload[0])) {
			return // another instance gets the call; the caller never sees this error
		}
		if f.Type == frame.TypeCallRes && len(f.Payload) > 1 {
			rc.appErr = frame.ResCode(f.Payload[1]) != frame.ResOK
		}
		binary.BigEndian.PutUint32(f.Raw[4:8], rc.srcID)
		rc.src.Write(f.Raw)
		switch {
		case f.Type == frame.TypeError:
			r.finish(rc, errored(frame.ErrCode(f.Payload[0])))
		case f.Payload[0]&frame.FlagMoreFragments == 0:
			r.finish(rc, answered(rc.appErr))
		}
	}
}

// finish forgets a call and tells its endpoint how it went; it reports
// whether the call was still in flight (only the first finish counts).
func (r *Router) finish(rc *relayed, result outcome) bool {
	r.mu.Lock()
	if rc.done {
		r.mu.Unlock()
		return false
	}
	rc.done = true
	delete(r.out, callKey{rc.dst, rc.dstID})
	delete(r.in, callKey{rc.src, rc.srcID})
	ep, start := rc.ep, rc.start
	rc.rec.end(result, time.Since(start))
	r.mu.Unlock()
	if rc.rec.n > 0 {
		r.recent.add(&rc.rec)
	}
	if rc.timer != nil {
		rc.timer.Stop()
	}
	r.mu.Lock()
	if rc.attempt != nil {
		rc.attempt.Stop()
	}
	r.mu.Unlock()
	ep.judge(start, result)
	r.endSpan(rc, result)
	rc.retry.release(&r.saved)
	if rc.admitted != nil {
		rc.admitted.release()
	}
	return true
}

// judge tells an endpoint how one attempt went.
func (e *endpoint) judge(start time.Time, o outcome) {
	if e == nil {
		return
	}
	e.pending.Add(-1)
	if !o.judged {
		return
	}
	now := time.Now()
	rtt := now.Sub(start)
	e.stats.record(o, rtt)
	e.observe(rtt, now)
	if o.failed() {
		e.breaker.Execute(broke)
	} else {
		e.breaker.Execute(passed)
	}
}

// The breaker learns outcomes after the fact: Execute runs one of these.
var errInstanceFailed = errors.New("instance failed the call")

func passed() (struct{}, error) { return struct{}{}, nil }
func broke() (struct{}, error)  { return struct{}{}, errInstanceFailed }

// expire ends a call whose TTL ran out in the relay: the caller hears a
// timeout, the callee a cancel.
func (r *Router) expire(rc *relayed, t frame.Tracing) {
	if !r.finish(rc, errored(frame.ErrCodeTimeout)) {
		return
	}
	r.stats.TimedOut.Add(1)
	r.sendError(rc.src, rc.srcID, t, frame.ErrCodeTimeout, "call timed out in the mesh")
	if b, err := frame.AppendCancel(nil, rc.dstID, frame.Cancel{Tracing: t, Why: []byte("ttl expired")}); err == nil {
		rc.dst.Write(b)
	}
}

// Closed fails the calls relayed through a closed connection (conn.Relayer).
func (r *Router) Closed(c *conn.Conn, err error) {
	r.peers.forget(c)
	r.mu.Lock()
	var broken []*relayed
	for _, rc := range r.out {
		if rc.src == c || rc.dst == c {
			broken = append(broken, rc)
		}
	}
	r.mu.Unlock()
	for _, rc := range broken {
		if rc.dst == c && r.retryAfter(rc, frame.ErrCodeNetwork) {
			continue
		}
		result := unjudged // the caller went away
		if rc.dst == c {
			result = errored(frame.ErrCodeNetwork)
		}
		if !r.finish(rc, result) {
			continue
		}
		if rc.dst == c {
			r.sendError(rc.src, rc.srcID, frame.Tracing{}, frame.ErrCodeNetwork, "connection to the callee was lost")
		} else if b, err := frame.AppendCancel(nil, rc.dstID, frame.Cancel{Why: []byte("caller went away")}); err == nil {
			rc.dst.Write(b)
		}
	}
}

// refuseCall answers a call the router will not route, and records why.
func (r *Router) refuseCall(c *conn.Conn, id uint32, req *frame.CallReq, code frame.ErrCode, msg string) {
	rec := record{at: time.Now(), service: string(req.Service), tracing: req.Tracing, refused: msg, code: code}
	caller, _ := req.Headers.Get(frame.HeaderCallerName)
	rec.setCaller(caller)
	r.recent.add(&rec)
	r.refuse(c, id, req.Tracing, code, msg)
}

func (r *Router) refuse(c *conn.Conn, id uint32, t frame.Tracing, code frame.ErrCode, msg string) {
	r.stats.Refused.Add(1)
	r.sendError(c, id, t, code, msg)
}

func (r *Router) sendError(c *conn.Conn, id uint32, t frame.Tracing, code frame.ErrCode, msg string) {
	c.Write(frame.AppendError(nil, id, frame.ErrorMsg{Code: code, Tracing: t, Message: []byte(msg)}))
}

// names interns service names, so the call path turns the name bytes of a
// frame into a string without allocating once a service has been seen.
type names struct {
	mu sync.RWMutex
	m  map[string]string
}

func (n *names) intern(b []byte) string {
	n.mu.RLock()
	s, ok := n.m[string(b)]
	n.mu.RUnlock()
	if ok {
		return s
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.m == nil {
		n.m = make(map[string]string)
	}
	if s, ok := n.m[string(b)]; ok {
		return s
	}
	if len(n.m) >= 100000 { // a flood of made-up names: stop remembering
		return string(b)
	}
	s = string(b)
	n.m[s] = s
	return s
}
