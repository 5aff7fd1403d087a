package router

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/tracing"

	"go.opentelemetry.io/otel/attribute"
)

// Retry defaults: at most 3 attempts in all, and retries limited to 20% of
// recent calls (counts that fade with a 10s time constant), or to a floor of
// 10 for a service so quiet that 20% would be less. A full outage thus
// cannot multiply the load on a service, while a quiet one can still retry.
const (
	maxAttempts     = 3
	budgetRatio     = 0.2
	budgetFloor     = 10.0
	budgetMemory    = 10 * time.Second
	backoffBase     = time.Millisecond
	backoffCap      = 25 * time.Millisecond
	minTimeForRetry = 2 * time.Millisecond
)

// retryFlags is the "re" transport header: c = connection errors (the
// default), t = timeouts, n = never.
type retryFlags struct{ never, conn, timeout bool }

func parseRetryFlags(h frame.Headers) retryFlags {
	v, _ := h.Get(frame.HeaderRetryFlags)
	return parseRetryValue(v)
}

// parseRetryValue reads the "re" header's value; empty means "c".
func parseRetryValue(v []byte) retryFlags {
	if len(v) == 0 {
		return retryFlags{conn: true}
	}
	return retryFlags{
		never:   bytes.IndexByte(v, 'n') >= 0,
		conn:    bytes.IndexByte(v, 'c') >= 0,
		timeout: bytes.IndexByte(v, 't') >= 0,
	}
}

// allows reports whether an attempt that failed with code may be tried on
// another instance. Busy and declined mean the instance did not start the
// call, so they are always safe; a lost connection needs "c"; a timeout "t".
func (f retryFlags) allows(code frame.ErrCode) bool {
	if f.never {
		return false
	}
	switch code {
	case frame.ErrCodeBusy, frame.ErrCodeDeclined:
		return true
	case frame.ErrCodeNetwork:
		return f.conn
	case frame.ErrCodeTimeout:
		return f.timeout
	}
	return false
}

// maxRetryBytes bounds the request frames kept for a retry: a larger
// request is forwarded as it streams and not retried.
const maxRetryBytes = 256 << 10

// retryState is what a call needs to be sent again elsewhere.
type retryState struct {
	frames  *[]byte // the request's frames as they arrived, one after another
	first   int     // the first frame's length
	service string
	tooBig  bool // frames stopped being kept at maxRetryBytes; guarded by Router.mu
	flags   retryFlags
	tried   []string
	tracing frame.Tracing
	max     int // attempts allowed in all
}

// keep saves a continuation frame of the request, until the bound.
// Called under Router.mu.
func (s *retryState) keep(raw []byte) {
	if s.tooBig || len(*s.frames)+len(raw) > maxRetryBytes {
		s.tooBig = true
		return
	}
	*s.frames = append(*s.frames, raw...)
}

func (r *Router) retryState(f *frame.Frame, req *frame.CallReq, ep *endpoint, attempts int) *retryState {
	flags := parseRetryFlags(req.Headers)
	if flags.never || attempts <= 1 {
		return nil
	}
	bp, _ := r.saved.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	*bp = append((*bp)[:0], f.Raw...)
	return &retryState{frames: bp, first: len(f.Raw), service: ep.service, flags: flags, tried: []string{ep.id}, tracing: req.Tracing, max: attempts}
}

func (s *retryState) release(pool *sync.Pool) {
	if s != nil && s.frames != nil {
		pool.Put(s.frames)
		s.frames = nil
	}
}

// retryAfter decides, when an attempt of rc failed with code, whether to try
// another instance, and if so ends the attempt and schedules the next. It
// reports whether it did (the caller must then not forward the failure).
func (r *Router) retryAfter(rc *relayed, code frame.ErrCode) bool {
	st := rc.retry
	if st == nil || !st.flags.allows(code) {
		return false
	}
	// Only a request that has passed through whole, and was kept whole, can
	// be sent again.
	r.mu.Lock()
	attempts := len(st.tried)
	ok := !rc.done && rc.reqDone && !st.tooBig
	r.mu.Unlock()
	if !ok || attempts >= st.max {
		return false
	}
	left := time.Until(rc.deadline)
	if left < minTimeForRetry {
		return false
	}
	svc := r.serviceStats(st.service)
	if !r.bal.withdrawRetry(st.service) {
		r.stats.BudgetExhausted.Add(1)
		svc.budgetExhausted.Add(1)
		return false
	}
	// End this attempt but keep the call.
	r.mu.Lock()
	if rc.done {
		r.mu.Unlock()
		return false
	}
	delete(r.out, callKey{rc.dst, rc.dstID})
	if rc.attempt != nil {
		rc.attempt.Stop() // this attempt is over; the next one gets its own
	}
	ep, start := rc.ep, rc.start
	rc.ep = nil
	rc.rec.end(errored(code), time.Since(start))
	if rc.trace != nil {
		rc.trace.events = append(rc.trace.events, tracing.Event{Name: "retry", Time: time.Now(),
			Attrs: []attribute.KeyValue{attribute.String("mesh.instance", ep.id), attribute.String("mesh.cause", code.String())}})
	}
	r.mu.Unlock()
	ep.judge(start, errored(code))
	r.stats.Retried.Add(1)
	svc.retries.Add(1)

	time.AfterFunc(Backoff(len(st.tried), left), func() { r.resend(rc, code) })
	return true
}

// resend sends rc's saved request frames to another instance.
func (r *Router) resend(rc *relayed, lastCode frame.ErrCode) {
	st := rc.retry
	r.mu.Lock()
	if rc.done {
		r.mu.Unlock()
		return
	}
	saved := slices.Clone(*st.frames)
	r.mu.Unlock()
	var req frame.CallReq
	var frag frame.Fragment
	f := &frame.Frame{Raw: saved[:st.first], Payload: saved[frame.HeaderSize:st.first]}
	f.Header, _ = frame.ParseHeader(f.Raw)
	frame.DecodeCallReq(f.Payload, &req, &frag)
	c := r.newCall(&req)
	defer r.calls.Put(c)
	c.Tried = st.tried
	dst, addHeader, ep, err := r.route(&req, c, false)
	if err != nil {
		if r.finish(rc, unjudged) {
			r.sendError(rc.src, rc.srcID, st.tracing, lastCode, "retry found no other instance: "+err.Error())
		}
		return
	}
	out := make([]byte, 0, len(saved)+64)
	if addHeader == "" {
		out = append(out, f.Raw...)
	} else if out2, ok := withHeader(out, f, &req, HeaderInstance, addHeader); ok {
		out = out2
	} else {
		out = append(out, f.Raw...)
	}
	r.mu.Lock()
	if rc.done {
		r.mu.Unlock()
		return
	}
	rc.dst, rc.dstID, rc.ep, rc.start = dst, dst.NewID(), ep, time.Now()
	rc.rec.add(ep, ep.addr, c.choice)
	binary.BigEndian.PutUint32(out[4:8], rc.dstID)
	tryTimeout := r.bal.policies.limits(ep.service).policy.TryTimeout.D()
	setTTL(out, rc.deadline, tryTimeout)
	if rc.hop.TraceID != 0 {
		rc.hop.Put(out[frame.CallReqTracingOffset:])
	}
	// The continuation frames follow, each under the new id.
	firstLen := len(out)
	out = append(out, saved[st.first:]...)
	for at := firstLen; at+frame.HeaderSize <= len(out); {
		size := int(binary.BigEndian.Uint16(out[at:]))
		if size < frame.HeaderSize {
			break
		}
		binary.BigEndian.PutUint32(out[at+4:at+8], rc.dstID)
		at += size
	}
	r.out[callKey{dst, rc.dstID}] = rc
	st.tried = append(st.tried, ep.id)
	dstID := rc.dstID
	r.mu.Unlock()
	r.watchAttempt(rc, dstID, tryTimeout)
	ep.pending.Add(1)
	if err := dst.Write(out); err != nil {
		if r.finish(rc, errored(frame.ErrCodeNetwork)) {
			r.sendError(rc.src, rc.srcID, st.tracing, frame.ErrCodeNetwork, "forwarding failed: "+err.Error())
		}
	}
}

// retryBudget keeps fading counts of calls and retries; a retry is allowed
// while retries stay within budgetRatio of calls (or budgetFloor).
type retryBudget struct {
	mu             sync.Mutex
	calls, retries float64
	last           time.Time
}

// fade ages both counts to now.
func (b *retryBudget) fade(now time.Time) {
	f := math.Exp(-float64(now.Sub(b.last)) / float64(budgetMemory))
	b.calls *= f
	b.retries *= f
	b.last = now
}

func (b *retryBudget) deposit() {
	b.mu.Lock()
	b.fade(time.Now())
	b.calls++
	b.mu.Unlock()
}

func (b *retryBudget) withdraw(ratio float64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.fade(time.Now())
	if b.retries+1 > max(ratio*b.calls, budgetFloor) {
		return false
	}
	b.retries++
	return true
}

// watchAttempt ends the attempt sent with id dstID if no answer came within
// the per-attempt timeout: the next hop should have answered Timeout by then,
// so it is unreachable (a partition, a hung process). The attempt counts as
// timed out: retried elsewhere when the flags allow, else the caller hears it.
func (r *Router) watchAttempt(rc *relayed, dstID uint32, timeout time.Duration) {
	if timeout <= 0 {
		return
	}
	grace := timeout + timeout/4 + 50*time.Millisecond // room for the next hop's own Timeout answer
	t := time.AfterFunc(grace, func() {
		r.mu.Lock()
		current := !rc.done && rc.dstID == dstID
		dst := rc.dst
		r.mu.Unlock()
		if !current {
			return
		}
		if b, err := frame.AppendCancel(nil, dstID, frame.Cancel{Why: []byte("attempt timed out")}); err == nil {
			dst.Write(b)
		}
		if r.retryAfter(rc, frame.ErrCodeTimeout) {
			return
		}
		if r.finish(rc, errored(frame.ErrCodeTimeout)) {
			r.sendError(rc.src, rc.srcID, rc.hop, frame.ErrCodeTimeout, fmt.Sprintf("no answer within the %v attempt timeout", timeout))
		}
	})
	r.mu.Lock()
	if rc.attempt != nil {
		rc.attempt.Stop()
	}
	rc.attempt = t
	r.mu.Unlock()
}
