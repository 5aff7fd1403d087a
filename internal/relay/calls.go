package relay

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/conn"
	"github.com/meshrpc/mesh/internal/golden"
	"github.com/meshrpc/mesh/internal/routing"
)

// relayed is one call in flight through this meshd. Its fields are
// ordered to keep it within 1,024 bytes, one allocation size class: its
// size is what a relayed call costs the garbage collector.
type relayed struct {
	call routing.Call // the routing state, kept for the call's retries
	// src and srcID are the caller's side: set before the call is shared,
	// never changed.
	src   *conn.Conn
	srcID uint32
	arg1  int32 // bytes of the request's arg1 so far
	// At the mesh's edge the relay checks what an app sends (edge.go): the
	// request when the caller is an app (checkReq, on src's read loop, under
	// mu), the answer when the instance is (checkRes, on dst's read loop).
	reqAsm, resAsm     frame.Assembler
	checkReq, checkRes bool
	lastHop            bool // the call came from another meshd
	appErr             bool // the answer is an application error; set by the callee's read loop
	// A first hop's call is counted on its edge (rec.edge, golden.go) when
	// it ends: as refusal when another meshd refused it, else as its
	// outcome says.
	refusal golden.Result

	mu          sync.Mutex // guards the rest once the call is in the tables
	reqDone     bool       // the request's last frame went out
	done        bool       // finished: only the first finish counts
	between     bool       // an attempt failed and the next one is being routed
	tooBig      bool       // the request passed what may be kept for a retry
	countedFrom bool       // srcT's halfFrom counts this call
	dstID       uint32
	firstLen    int32 // of the saved request's first frame
	dst         *conn.Conn
	attempt     routing.Attempt // of the instance picked here (first hop); its Start is the attempt's
	deadline    time.Time
	timer       *callTimer // ends the call at its TTL
	tryTimer    *callTimer // ends the current attempt at the per-attempt timeout
	// For retries: the request's frames as they arrived, one after another,
	// until maxRetryBytes (nil: the call is not retried).
	saved *[]byte
	srcT  *table    // the caller's table (first hop), which saved bytes and halfFrom count against
	half  *table    // the table whose halfSent counts this call, while it does
	rec   record    // the routing decisions, for explanations
	trace *hopTrace // this hop's span to be, when the call is traced
	hedge *hedging  // its hedge, when its service hedges its method (hedge.go)
	// hedged is set once a hedge is armed: only then do answers take the
	// hedge's path (settleHedge).
	hedged atomic.Bool
	hop    frame.Tracing // the tracing field this hop sends on (retries reuse it)
}

// table holds the calls relayed through one connection: those its peer
// sent (took, by the peer's message id) and those this meshd sent on it
// (sent, by the id this meshd gave). Keeping them per connection, as
// tchannel-go's relay does, means no lock is shared by all calls, and a
// closed connection's calls are found without a scan.
type table struct {
	mu         sync.Mutex
	took, sent map[uint32]*relayed
	halfSent   atomic.Int64 // calls sent on it whose request has not ended
	halfFrom   atomic.Int64 // calls its peer (an app) has not finished sending
	saved      atomic.Int64 // bytes its peer's calls keep for retries
}

type entry struct {
	id uint32
	rc *relayed
}

func (r *Relay) table(c *conn.Conn) *table {
	if v, ok := r.tables.Load(c); ok {
		return v.(*table)
	}
	v, _ := r.tables.LoadOrStore(c, &table{took: make(map[uint32]*relayed), sent: make(map[uint32]*relayed)})
	return v.(*table)
}

// lookup finds the call of message id on c: one c's peer sent (sent=false)
// or one sent on c (sent=true).
func (r *Relay) lookup(c *conn.Conn, id uint32, sent bool) *relayed {
	v, ok := r.tables.Load(c)
	if !ok {
		return nil
	}
	t := v.(*table)
	t.mu.Lock()
	m := t.took
	if sent {
		m = t.sent
	}
	rc := m[id]
	t.mu.Unlock()
	return rc
}

// track puts a new call in its caller's and its callee's tables.
func (r *Relay) track(rc *relayed) {
	r.inflight.Add(1)
	src := rc.srcT // looked up already on a first hop
	if src == nil {
		src = r.table(rc.src)
	}
	src.add(rc.srcID, rc, false)
	dst := r.table(rc.dst)
	dst.add(rc.dstID, rc, true)
	if !rc.reqDone {
		rc.mu.Lock()
		if !rc.done && !rc.reqDone {
			rc.half = dst
			rc.half.halfSent.Add(1)
			if rc.srcT != nil {
				rc.srcT.halfFrom.Add(1)
				rc.countedFrom = true
			}
		}
		rc.mu.Unlock()
	}
}

// uncountHalf ends rc's counts as half sent. Called under rc.mu.
func (rc *relayed) uncountHalf() {
	if rc.half != nil {
		rc.half.halfSent.Add(-1)
		rc.half = nil
	}
	if rc.countedFrom {
		rc.srcT.halfFrom.Add(-1)
		rc.countedFrom = false
	}
}

func (t *table) add(id uint32, rc *relayed, sent bool) {
	t.mu.Lock()
	if sent {
		t.sent[id] = rc
	} else {
		t.took[id] = rc
	}
	t.mu.Unlock()
}

// remove takes rc off c's table. A closed connection's table that is left
// empty goes too (a call can reach it after Closed dropped the table).
func (r *Relay) remove(c *conn.Conn, id uint32, rc *relayed, sent bool) {
	v, ok := r.tables.Load(c)
	if !ok {
		return
	}
	t := v.(*table)
	t.mu.Lock()
	m := t.took
	if sent {
		m = t.sent
	}
	if m[id] == rc {
		delete(m, id)
	}
	empty := len(t.took) == 0 && len(t.sent) == 0
	t.mu.Unlock()
	if empty && c.Closed() {
		r.tables.CompareAndDelete(c, t)
	}
}

// drain empties a closed connection's table.
func (t *table) drain() (sent, took []entry) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for id, rc := range t.sent {
		sent = append(sent, entry{id, rc})
	}
	for id, rc := range t.took {
		took = append(took, entry{id, rc})
	}
	clear(t.sent)
	clear(t.took)
	return sent, took
}

// finish forgets a call and tells the Balancer how its last attempt went;
// it reports whether the call was still in flight (only the first finish
// counts).
func (r *Relay) finish(rc *relayed, o routing.Outcome) bool {
	rc.mu.Lock()
	if rc.done {
		rc.mu.Unlock()
		return false
	}
	rc.done = true
	refusal, edge := rc.refusal, rc.rec.edge
	att := rc.attempt
	rc.attempt = routing.Attempt{}
	if !rc.between {
		rc.rec.end(o, att.Took())
	}
	dst, dstID := rc.dst, rc.dstID
	stopTimer(&rc.timer)
	stopTimer(&rc.tryTimer)
	saved, savedN, srcT := rc.saved, 0, rc.srcT
	if saved != nil {
		savedN = len(*saved)
	}
	rc.saved = nil
	rc.uncountHalf()
	ht := rc.trace
	rc.trace = nil
	hedgeDst, hedgeID, hedgeAtt := rc.endHedge()
	rc.mu.Unlock()
	if hedgeDst != nil {
		r.cancelAttempt(rc, hedgeDst, hedgeID, hedgeAtt, "the hedged call ended")
	}

	r.remove(dst, dstID, rc, true)
	r.remove(rc.src, rc.srcID, rc, false)
	r.inflight.Add(-1)
	rc.rec.result, rc.rec.took = r.countCall(rc, edge, refusal, o, ht != nil)
	if rc.rec.n > 0 {
		r.recent.add(&rc.rec)
	}
	if ht != nil {
		att.DoneSampled(o, rc.traceID())
	} else {
		att.Done(o)
	}
	r.endSpan(rc, ht, o)
	if saved != nil {
		r.unkeep(srcT, savedN)
		r.saved.Put(saved)
	}
	rc.call.Release()
	return true
}
