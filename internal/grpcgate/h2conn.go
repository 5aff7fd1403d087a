package grpcgate

import (
	"bufio"
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/conn"
	"github.com/meshrpc/mesh/internal/outbox"
)

// h2conn is the server side of one gRPC connection from an app: HTTP/2 as
// far as unary calls need it, and no further. One goroutine reads and
// decodes frames and gathers each stream's request; a whole request is
// served on a goroutine of its own (it waits for the relay's answer), which
// writes the answer through the connection's outbox, batched with every
// other stream's frames. No goroutine, channel or timer per call beyond
// that one, and nothing buffered twice: grpc-go's server, which this
// replaces, spent more CPU per call than the relay's whole hop.
type h2conn struct {
	gc     *gconn
	g      *Gateway
	w      *outbox.Writer
	ctx    context.Context // ends when the connection closes
	cancel context.CancelFunc
	once   sync.Once

	mu      sync.Mutex
	streams map[uint32]*h2stream // open: being received, served or answered
	win     window               // what the client lets meshd send
	idle    *time.Timer          // closes the connection after IdleTimeout with no stream
	closed  bool

	sent atomic.Bool // headers or data went out since the client's last ping

	// Only the read loop touches these.
	lastID      uint32 // the highest stream id the client opened
	headers     *headerReader
	recvConn    connCredit
	pingStrikes int
	lastPing    time.Time
}

// h2stream is one call on an h2conn.
type h2stream struct {
	outgoing // the answer's flow control; its gone: reset by the client, or answered
	incoming // the request
	path     string
	md       meta
	deadline time.Time  // from grpc-timeout; zero: none
	served   bool       // handed to the relay: it leaves the table once answered
	ch       *conn.Conn // the call went out on ch as callID (mu)
	callID   uint32
}

// Windows meshd gives a client (the HTTP/2 default is 64 KiB each): large
// enough that calls of up to a MiB never wait for a window update.
const (
	recvStreamWindow = 1 << 20
	recvConnWindow   = 16 << 20
	// maxPingStrikes is how many pings too soon a client may send before it
	// is told to calm down (gRPC's keepalive enforcement counts the same).
	maxPingStrikes = 2
	// maxQueued bounds the frames the read loop queues (acks, window
	// updates, resets) for a client that sends and does not read.
	maxQueued = 4 << 20
	// answerQueue is the answers queued for a client before the next one
	// waits, on a worker, for it to read.
	answerQueue = 1 << 20
)

// serveH2 serves gc until it closes.
func (g *Gateway) serveH2(gc *gconn) {
	c := &h2conn{gc: gc, g: g, streams: map[uint32]*h2stream{}, win: newWindow()}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.w = outbox.New(gc.Conn, 1<<20, g.limits.WriteTimeout, nil, func(error) { c.close() })
	go c.w.Loop()
	if !g.track(c) {
		c.close()
		return
	}
	defer g.untrack(c)
	if g.limits.IdleTimeout > 0 {
		c.mu.Lock()
		c.idle = time.AfterFunc(g.limits.IdleTimeout, c.onIdle)
		c.mu.Unlock()
	}
	err := c.readLoop()
	var ce http2.ConnectionError
	switch {
	case errors.As(err, &ce):
		c.goAway(http2.ErrCode(ce), err.Error())
	case errors.Is(err, http2.ErrFrameTooLarge):
		c.goAway(http2.ErrCodeFrameSize, err.Error())
	case errors.Is(err, errCalm):
		c.goAway(http2.ErrCodeEnhanceYourCalm, "too_many_pings")
	}
	c.close()
}

// errCalm ends a connection that pings too often.
var errCalm = errors.New("too many pings")

func (c *h2conn) readLoop() error {
	nc := c.gc.Conn
	nc.SetReadDeadline(time.Now().Add(c.g.limits.HandshakeTimeout))
	rd := c.g.batch.Reading(nc)
	defer rd.Stop()
	br := bufio.NewReaderSize(rd, 16<<10)
	var preface [len(http2.ClientPreface)]byte
	if _, err := io.ReadFull(br, preface[:]); err != nil {
		return err
	}
	if string(preface[:]) != http2.ClientPreface {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	fr := http2.NewFramer(nil, br)
	fr.SetReuseFrames()
	c.headers = newHeaderReader(fr, c.g.limits.MaxHeaderList)
	fr.SetMaxReadFrameSize(16384) // HTTP/2's default, which meshd's settings keep
	settings := appendSettings(nil,
		http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: c.g.limits.MaxStreams},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: recvStreamWindow},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: c.g.limits.MaxHeaderList})
	settings = appendWindowUpdate(settings, 0, recvConnWindow-65535)
	c.w.Write(settings)

	for first := true; ; first = false {
		f, err := fr.ReadFrame()
		if se, ok := streamErrorOf(err); ok {
			c.resetStream(se.StreamID, se.Code)
			continue
		}
		if err != nil {
			return err
		}
		if first {
			// The client's preface ends with its settings.
			if sf, ok := f.(*http2.SettingsFrame); !ok || sf.IsAck() {
				return http2.ConnectionError(http2.ErrCodeProtocol)
			}
			nc.SetReadDeadline(time.Time{})
		}
		if err := c.onFrame(f); err != nil {
			return err
		}
	}
}

func (c *h2conn) onFrame(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.HeadersFrame:
		b, err := c.headers.read(f)
		if se, ok := streamErrorOf(err); ok {
			c.resetStream(se.StreamID, se.Code)
			return nil
		}
		if err != nil {
			return err
		}
		return c.onHeaders(b)
	case *http2.DataFrame:
		return c.onData(f)
	case *http2.SettingsFrame:
		if f.IsAck() {
			return nil
		}
		if err := f.ForeachSetting(c.onSetting); err != nil {
			return err
		}
		return c.control(appendSettingsAck(nil))
	case *http2.WindowUpdateFrame:
		return c.onWindowUpdate(f.StreamID, int64(f.Increment))
	case *http2.PingFrame:
		if f.IsAck() {
			return nil
		}
		if err := c.onPing(); err != nil {
			return err
		}
		return c.control(appendPingAck(nil, f.Data))
	case *http2.RSTStreamFrame:
		abandon := func() {}
		c.mu.Lock()
		if st := c.streams[f.StreamID]; st != nil {
			abandon = c.abandonLocked(st)
		}
		c.mu.Unlock()
		abandon()
	case *http2.GoAwayFrame:
		// The client sends no new calls; those open finish.
	case *http2.PushPromiseFrame:
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	return nil // PRIORITY, frames of unknown types
}

func (c *h2conn) onSetting(s http2.Setting) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.win.setting(s, func(delta int64) {
		for _, st := range c.streams {
			st.win += delta
		}
	}); err != nil {
		return err
	}
	return c.releaseLocked()
}

// onPing enforces gRPC's keepalive rule: a client pings at most every
// PingInterval, unless meshd sent it headers or data since its last ping
// (grpc-go's flow control pings ride on data).
func (c *h2conn) onPing() error {
	now := time.Now()
	defer func() { c.lastPing = now }()
	if c.sent.Swap(false) {
		c.pingStrikes = 0
		return nil
	}
	if now.Sub(c.lastPing) < c.g.limits.PingInterval {
		if c.pingStrikes++; c.pingStrikes > maxPingStrikes {
			c.g.m.refused.WithLabelValues("too_many_pings").Inc()
			return errCalm
		}
	}
	return nil
}

func (c *h2conn) onWindowUpdate(id uint32, n int64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var o *outgoing
	if id != 0 {
		st := c.streams[id]
		if st == nil {
			return nil
		}
		o = &st.outgoing
	}
	err := c.win.update(o, n)
	if se, ok := streamErrorOf(err); ok {
		o.gone = true
		return c.control(appendRSTStream(nil, id, se.Code))
	} else if err != nil {
		return err
	}
	return c.releaseLocked()
}

func (c *h2conn) onHeaders(f *headerBlock) error {
	id := f.streamID
	c.mu.Lock()
	st := c.streams[id]
	c.mu.Unlock()
	if st != nil { // trailers: a unary client sends none but may end its request so
		if !f.ended {
			c.resetStream(id, http2.ErrCodeProtocol)
			return nil
		}
		c.endRequest(st)
		return nil
	}
	if id <= c.lastID || id%2 == 0 {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	c.lastID = id
	c.mu.Lock()
	full := uint32(len(c.streams)) >= c.g.limits.MaxStreams
	c.mu.Unlock()
	if full {
		c.g.m.refused.WithLabelValues("max_streams").Inc()
		return c.control(appendRSTStream(nil, id, http2.ErrCodeRefusedStream))
	}
	st = &h2stream{outgoing: outgoing{id: id}, md: make(meta, 0, len(f.fields))}
	if f.truncated {
		c.refuse(st, "metadata_size", status.Newf(codes.ResourceExhausted, "the call's metadata exceeds %d bytes", c.g.limits.MaxHeaderList))
		return nil
	}
	var method, ctype string
	var timeout time.Duration
	for _, hf := range f.fields {
		switch hf.Name {
		case ":method":
			method = hf.Value
		case ":path":
			st.path = hf.Value
		case ":authority":
			st.md.add(":authority", hf.Value)
		case "content-type":
			ctype = hf.Value
		case "grpc-timeout":
			d, ok := parseTimeout(hf.Value)
			if !ok {
				c.refuse(st, "bad_metadata", status.Newf(codes.InvalidArgument, "grpc-timeout %q is malformed", hf.Value))
				return nil
			}
			timeout = d
		default:
			if hf.IsPseudo() {
				continue
			}
			if err := st.md.addWire(hf.Name, hf.Value); err != nil {
				c.refuse(st, "bad_metadata", status.Newf(codes.InvalidArgument, "%v", err))
				return nil
			}
		}
	}
	if method != "POST" || !isGRPCContentType(ctype) {
		c.refuse(st, "not_grpc", status.Newf(codes.InvalidArgument, "not a gRPC call (:method %q, content-type %q)", method, ctype))
		return nil
	}
	if timeout > 0 {
		st.deadline = time.Now().Add(timeout)
	}
	c.mu.Lock()
	st.win = c.win.init
	c.streams[id] = st
	if c.idle != nil {
		c.idle.Stop()
	}
	c.mu.Unlock()
	if f.ended {
		c.endRequest(st)
	}
	return nil
}

func (c *h2conn) onData(f *http2.DataFrame) error {
	n := int(f.Length)
	if up := c.recvConn.add(n); up > 0 {
		if err := c.control(appendWindowUpdate(nil, 0, up)); err != nil {
			return err
		}
	}
	c.mu.Lock()
	st := c.streams[f.StreamID]
	c.mu.Unlock()
	if st == nil {
		if f.StreamID > c.lastID {
			return http2.ConnectionError(http2.ErrCodeProtocol) // a stream never opened
		}
		return nil // a stream already answered, refused or reset: dropped
	}
	if st.served {
		c.resetStream(st.id, http2.ErrCodeStreamClosed)
		return nil
	}
	if err := c.gather(st, f.Data()); err != nil {
		c.refuse(st, err.reason, err.st)
		return nil
	}
	if up := st.credit(n, f.StreamEnded()); up > 0 {
		if err := c.control(appendWindowUpdate(nil, st.id, up)); err != nil {
			return err
		}
	}
	if f.StreamEnded() {
		c.endRequest(st)
	}
	return nil
}

// refusal is a request the gateway answers without serving it.
type refusal struct {
	reason string
	st     *status.Status
}

// gather adds data to a stream's request: one message, uncompressed, of at
// most MaxMessage bytes.
func (c *h2conn) gather(st *h2stream, data []byte) *refusal {
	switch problem, length := st.add(data, c.g.limits.MaxMessage); problem {
	case compressed:
		return &refusal{"compressed", status.Newf(codes.Unimplemented, "%s: compressed messages are not supported; send them uncompressed", st.path)}
	case tooBig:
		return &refusal{"message_size", status.Newf(codes.ResourceExhausted, "the request message is %d bytes, more than the %d meshd takes", length, c.g.limits.MaxMessage)}
	case second:
		return &refusal{"streaming", status.Newf(codes.Unimplemented, "%s: the mesh carries unary calls only; this call sent a second message (client or bidirectional streaming)", st.path)}
	}
	return nil
}

// endRequest serves a stream whose client finished sending.
func (c *h2conn) endRequest(st *h2stream) {
	switch {
	case st.served:
		return
	case len(st.body) == 0:
		c.refuse(st, "no_message", status.Newf(codes.InvalidArgument, "%s: the call sent no request message", st.path))
		return
	case !st.whole():
		c.refuse(st, "short_message", status.Newf(codes.InvalidArgument, "%s: the request message ended after %d bytes", st.path, len(st.body)))
		return
	}
	st.served = true
	c.g.start(c, st)
}

// going notes the call a stream went out as, for a reset to abandon it.
func (c *h2conn) going(st *h2stream, ch *conn.Conn, id uint32) {
	c.mu.Lock()
	gone := st.gone
	st.ch, st.callID = ch, id
	c.mu.Unlock()
	if gone && id != 0 {
		ch.Abandon(id, errReset)
	}
}

// errReset ends the call of a stream its client reset.
var errReset = frame.Errorf(frame.ErrCodeCancelled, "the gRPC client reset the stream")

// abandonLocked marks a stream reset by its client and returns what ends
// its call, if it went out; called with mu held.
func (c *h2conn) abandonLocked(st *h2stream) func() {
	st.gone = true
	if !st.served {
		c.removeLocked(st)
	}
	if ch, id := st.ch, st.callID; ch != nil && id != 0 {
		return func() { ch.Abandon(id, errReset) }
	}
	return func() {}
}

// finish answers a served stream and counts its call.
func (c *h2conn) finish(st *h2stream, r reply) {
	c.g.m.calls.WithLabelValues(r.status.Code().String()).Inc()
	c.answer(st, r)
}

// refuse answers a stream the gateway does not serve, and asks the client
// to stop sending it. Only the read loop refuses.
func (c *h2conn) refuse(st *h2stream, reason string, s *status.Status) {
	c.g.m.refused.WithLabelValues(reason).Inc()
	c.g.m.calls.WithLabelValues(s.Code().String()).Inc()
	c.mu.Lock()
	if c.streams[st.id] == st {
		c.removeLocked(st)
	}
	c.mu.Unlock()
	// The read loop, the one writer of maxFrame, reads it without mu.
	b := appendTrailersOnly(nil, st.id, c.win.maxFrame, nil, nil, s)
	c.control(appendRSTStream(b, st.id, http2.ErrCodeNo))
}

// answer writes a served stream's reply: headers, the message as the
// windows allow (the rest when they open: releaseLocked), trailers; all
// of a blocked answer is queued under mu, so its frames keep their order.
func (c *h2conn) answer(st *h2stream, r reply) {
	c.mu.Lock()
	if st.gone || c.closed {
		c.removeLocked(st)
		c.mu.Unlock()
		return
	}
	maxFrame := c.win.maxFrame
	c.sent.Store(true)
	if r.status.Code() != codes.OK {
		b := appendTrailersOnly(nil, st.id, maxFrame, r.header, r.trailer, r.status)
		c.removeLocked(st)
		c.mu.Unlock()
		c.send(b)
		return
	}
	// Headers, message and trailers in one buffer, sized once.
	buf := getBuffer(256 + len(r.message))
	b := appendHeaders(*buf, st.id, maxFrame, false, responseHeaders(r.header))
	trailer := appendHeaders(nil, st.id, maxFrame, true, trailerFields(r.trailer, r.status))
	b, done := c.win.send(b, &st.outgoing, r.message, trailer)
	copied := true
	if done {
		c.removeLocked(st)
		c.mu.Unlock()
		copied = c.send(b)
	} else {
		c.control(b)
		c.mu.Unlock()
	}
	if copied {
		putBuffer(buf, b)
	}
}

// releaseLocked sends what the windows now let out of blocked answers.
func (c *h2conn) releaseLocked() error {
	b := c.win.release(nil, func(o *outgoing) { c.removeLocked(c.streams[o.id]) })
	if len(b) == 0 {
		return nil
	}
	c.sent.Store(true)
	return c.control(b)
}

// removeLocked takes a stream out of the table; the last one out starts
// the idle timer.
func (c *h2conn) removeLocked(st *h2stream) {
	if st == nil {
		return
	}
	st.gone = true
	if c.streams[st.id] != st {
		return
	}
	delete(c.streams, st.id)
	if len(c.streams) == 0 && c.g.limits.IdleTimeout > 0 && !c.closed {
		if c.idle == nil {
			c.idle = time.AfterFunc(c.g.limits.IdleTimeout, c.onIdle)
		} else {
			c.idle.Reset(c.g.limits.IdleTimeout)
		}
	}
}

func (c *h2conn) onIdle() {
	c.mu.Lock()
	idle := len(c.streams) == 0
	c.mu.Unlock()
	if idle {
		c.goAway(http2.ErrCodeNo, "idle")
		c.close()
	}
}

// resetStream ends a stream on the client's fault.
func (c *h2conn) resetStream(id uint32, code http2.ErrCode) {
	abandon := func() {}
	c.mu.Lock()
	if st := c.streams[id]; st != nil {
		abandon = c.abandonLocked(st)
	}
	c.mu.Unlock()
	abandon()
	c.control(appendRSTStream(nil, id, code))
}

// send writes a whole answer, its system call held while the gateway's
// read loops are busy (outbox.Batch). It may run on a read loop, so it
// never waits: past answerQueue bytes queued for a client that reads
// slowly, a worker waits for room instead.
// It reports whether b was copied (and may be reused): an answer that
// waits for the client keeps it.
func (c *h2conn) send(b []byte) (copied bool) {
	if err := c.g.batch.Write(c.w, b, answerQueue); err == outbox.ErrFull {
		c.g.work.Go(func() { c.w.WriteInline(b) })
		return false
	}
	return true
}

// control queues frames without waiting on the socket: the read loop's
// writes. A client that sends and never reads fails here.
func (c *h2conn) control(b []byte) error {
	return c.g.batch.Write(c.w, b, maxQueued) // with the read loop's other writes: no wake of the write loop
}

func (c *h2conn) goAway(code http2.ErrCode, debug string) {
	c.control(appendGoAway(nil, c.lastID, code, debug))
}

// close ends the connection: its calls' contexts, what is queued goes out
// (within a grace), then the socket.
func (c *h2conn) close() {
	c.once.Do(func() {
		c.mu.Lock()
		c.closed = true
		if c.idle != nil {
			c.idle.Stop()
		}
		c.mu.Unlock()
		c.cancel()
		go func() {
			c.w.Abort()
			c.w.Stop()
			c.gc.Close()
		}()
	})
}
