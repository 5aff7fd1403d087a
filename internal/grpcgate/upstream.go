package grpcgate

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/meshrpc/mesh/internal/outbox"
)

// upstream calls one stock gRPC server over one HTTP/2 connection of
// meshd's own, dialed at the first call and again once it ended: unary
// calls only, many at once on the connection, their frames batched, the
// answers read by one goroutine. grpc-go's client, which this replaces,
// cost a goroutine hand-off each way and most of a hop's CPU.
type upstream struct {
	addr       string
	maxMessage int
	timeout    time.Duration // bounds one write to the server
	batch      *outbox.Batch // holds writes while read loops work; nil: none

	mu     sync.Mutex
	cur    *upConn
	dialed chan struct{} // closed when the dial under way ends
	err    error         // its failure
}

// dialTimeout bounds a dial to a gRPC server.
const dialTimeout = time.Second

// call makes one unary call of path with metadata md and the request
// message in; the reply's message is the answer's, without its framing.
func (u *upstream) call(ctx context.Context, path string, md meta, in []byte) reply {
	c, err := u.conn(ctx)
	if err != nil {
		return failed(err)
	}
	return c.call(ctx, path, md, in)
}

// start makes a call like call, but returns at once: done gets the reply,
// once. With a live connection that has room for it the call goes out on
// the caller's goroutine; otherwise (a dial, a wait for room) on one of
// its own.
func (u *upstream) start(ctx context.Context, path string, md meta, in []byte, done func(reply)) {
	u.mu.Lock()
	c := u.cur
	u.mu.Unlock()
	if c != nil && c.usable() && c.start(ctx, path, md, in, done) {
		return
	}
	go func() { done(u.call(ctx, path, md, in)) }()
}

// conn is the live connection, dialed if there is none.
func (u *upstream) conn(ctx context.Context) (*upConn, error) {
	u.mu.Lock()
	for {
		if c := u.cur; c != nil && c.usable() {
			u.mu.Unlock()
			return c, nil
		}
		if u.dialed == nil {
			u.dialed = make(chan struct{})
			go u.dial()
		}
		dialed := u.dialed
		u.mu.Unlock()
		select {
		case <-dialed:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		u.mu.Lock()
		if u.cur == nil || !u.cur.usable() {
			err := u.err
			u.mu.Unlock()
			if err == nil {
				err = status.Errorf(codes.Unavailable, "the connection to the gRPC server at %s ended as it opened", u.addr)
			}
			return nil, err
		}
	}
}

func (u *upstream) dial() {
	c, err := dialUpstream(u)
	u.mu.Lock()
	defer u.mu.Unlock()
	if err != nil {
		u.err = status.Errorf(codes.Unavailable, "the gRPC server at %s: %v", u.addr, err)
	} else {
		u.cur, u.err = c, nil
	}
	close(u.dialed)
	u.dialed = nil
}

// close ends the connection; calls made after dial a new one.
func (u *upstream) close() {
	u.mu.Lock()
	c := u.cur
	u.cur = nil
	u.mu.Unlock()
	if c != nil {
		c.fail(errors.New("meshd closed the connection"))
	}
}

// upConn is one HTTP/2 connection to a gRPC server.
type upConn struct {
	u  *upstream
	nc net.Conn
	w  *outbox.Writer

	mu         sync.Mutex
	calls      map[uint32]*upCall
	nextID     uint32
	win        window        // what the server lets meshd send
	maxStreams uint32        // the server's SETTINGS_MAX_CONCURRENT_STREAMS
	room       chan struct{} // closed when a call ends, for calls waiting for a stream
	waiting    int           // calls waiting for room
	goneAway   bool          // the server takes no new streams
	err        error         // why the connection ended

	headers  *headerReader // the read loop's
	recvConn connCredit    // the read loop's
}

// upCall is one call in flight.
type upCall struct {
	outgoing             // the request's flow control
	incoming             // the answer's message
	done     func(reply) // told the reply, once
	stop     func() bool // stops watching the call's context
	deadline time.Time   // the call's context's (zero: none)
	header   bool        // the answer's headers came
	hdr      meta        // their metadata
}

func dialUpstream(u *upstream) (*upConn, error) {
	nc, err := net.DialTimeout("tcp", u.addr, dialTimeout)
	if err != nil {
		return nil, err
	}
	nc = outbox.Socket(nc)
	c := &upConn{u: u, nc: nc, calls: map[uint32]*upCall{}, nextID: 1, win: newWindow(), maxStreams: 1 << 31, room: make(chan struct{})}
	c.w = outbox.New(nc, 1<<20, u.timeout, nil, func(err error) { c.fail(err) })
	go c.w.Loop()
	b := append([]byte(http2.ClientPreface), appendSettings(nil,
		http2.Setting{ID: http2.SettingEnablePush, Val: 0},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: recvStreamWindow},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: DefaultMaxHeaderList})...)
	b = appendWindowUpdate(b, 0, recvConnWindow-65535)
	if err := c.w.Write(b); err != nil {
		nc.Close()
		return nil, err
	}
	go c.readLoop()
	return c, nil
}

// usable reports whether new calls may go on the connection.
func (c *upConn) usable() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err == nil && !c.goneAway && c.nextID < 1<<31-1
}

func (c *upConn) call(ctx context.Context, path string, md meta, in []byte) reply {
	got := make(chan reply, 1)
	for !c.start(ctx, path, md, in, func(r reply) { got <- r }) {
		if err := c.waitRoom(ctx); err != nil {
			return failed(err)
		}
	}
	return <-got
}

// waitRoom waits until the connection has room for a stream (the server's
// SETTINGS_MAX_CONCURRENT_STREAMS), or has ended.
func (c *upConn) waitRoom(ctx context.Context) error {
	c.mu.Lock()
	if c.err != nil || uint32(len(c.calls)) < c.maxStreams {
		c.mu.Unlock()
		return nil
	}
	room := c.room
	c.waiting++
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.waiting--
		c.mu.Unlock()
	}()
	select {
	case <-room:
		return nil
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	}
}

// start sends a call and returns at once: done gets its reply, once, on
// the goroutine that ends the call (the read loop's, mostly; ctx's end
// cancels it). It sends nothing and returns false when the server's
// stream limit leaves no room now.
func (c *upConn) start(ctx context.Context, path string, md meta, in []byte, done func(reply)) bool {
	fields := requestFields(ctx, path, c.u.addr, md)
	call := &upCall{done: done}
	call.deadline, _ = ctx.Deadline()

	c.mu.Lock()
	if c.err == nil && !c.goneAway && uint32(len(c.calls)) >= c.maxStreams {
		c.mu.Unlock()
		return false
	}
	if c.err != nil || c.goneAway {
		err := c.err
		c.mu.Unlock()
		done(failed(status.Errorf(codes.Unavailable, "the connection to the gRPC server at %s ended: %v", c.u.addr, err)))
		return true
	}
	// The stream's id is taken and its HEADERS queued under mu: HTTP/2
	// wants new streams' ids in the order their HEADERS go out.
	call.id = c.nextID
	c.nextID += 2
	call.win = c.win.init
	c.calls[call.id] = call
	call.stop = afterFunc(ctx, func() { c.cancel(call, ctx) })
	buf := getBuffer(256 + len(in))
	b := appendHeaders(*buf, call.id, c.win.maxFrame, false, fields)
	b, _ = c.win.send(b, &call.outgoing, in, nil)
	err := c.w.Add(b, maxQueued) // a copy
	c.mu.Unlock()
	putBuffer(buf, b)
	if err == nil {
		c.u.batch.Send(c.w)
	}
	if err != nil {
		c.finish(call, failed(status.Errorf(codes.Unavailable, "the gRPC server at %s: %v", c.u.addr, err)))
	}
	return true
}

// cancel ends a call whose context ended before its answer.
func (c *upConn) cancel(call *upCall, ctx context.Context) {
	c.mu.Lock()
	_, open := c.calls[call.id]
	c.mu.Unlock()
	if open {
		c.control(appendRSTStream(nil, call.id, http2.ErrCodeCancel))
		c.finish(call, failed(status.FromContextError(ctx.Err()).Err()))
	}
}

// requestFields is a call's header block.
func requestFields(ctx context.Context, path, authority string, md meta) []hpack.HeaderField {
	f := make([]hpack.HeaderField, 0, 8+len(md))
	f = append(f,
		methodPOST,
		schemeHTTP,
		hpack.HeaderField{Name: ":path", Value: path},
		hpack.HeaderField{Name: ":authority", Value: authority},
		contentType,
		teTrailers,
		userAgent)
	if d, ok := ctx.Deadline(); ok {
		f = append(f, hpack.HeaderField{Name: "grpc-timeout", Value: encodeTimeout(time.Until(d))})
	}
	return md.appendFields(f)
}

// finish ends a call with its reply, once.
func (c *upConn) finish(call *upCall, r reply) {
	c.mu.Lock()
	if c.calls[call.id] != call {
		c.mu.Unlock()
		return
	}
	delete(c.calls, call.id)
	call.gone = true
	if c.waiting > 0 {
		close(c.room)
		c.room = make(chan struct{})
	}
	idle := c.goneAway && len(c.calls) == 0
	c.mu.Unlock()
	if call.stop != nil {
		call.stop()
	}
	if r.status.Code() == codes.Canceled && !call.deadline.IsZero() && !time.Now().Before(call.deadline) {
		// Cancelled once the deadline passed (the server's grpc-timeout timer
		// beat the call's own): the deadline's doing.
		r = failed(status.Error(codes.DeadlineExceeded, "the call's deadline passed at the gRPC server"))
	}
	call.done(r)
	if idle {
		c.fail(errors.New("the server went away"))
	}
}

// fail ends the connection and every call on it.
func (c *upConn) fail(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	calls := make([]*upCall, 0, len(c.calls))
	for _, call := range c.calls {
		calls = append(calls, call)
	}
	c.mu.Unlock()
	for _, call := range calls {
		c.finish(call, failed(status.Errorf(codes.Unavailable, "the connection to the gRPC server at %s ended: %v", c.u.addr, err)))
	}
	go func() {
		c.w.Abort()
		c.w.Stop()
		c.nc.Close()
	}()
}

func (c *upConn) readLoop() {
	rd := c.u.batch.Reading(c.nc)
	defer rd.Stop()
	br := bufio.NewReaderSize(rd, 16<<10)
	fr := http2.NewFramer(nil, br)
	fr.SetReuseFrames()
	c.headers = newHeaderReader(fr, DefaultMaxHeaderList)
	fr.SetMaxReadFrameSize(16384)
	for {
		f, err := fr.ReadFrame()
		if se, ok := streamErrorOf(err); ok {
			c.reset(se.StreamID, se.Code, status.Errorf(codes.Internal, "the gRPC server broke HTTP/2 on the stream: %v", err))
			continue
		}
		if err == nil {
			err = c.onFrame(f)
		}
		if err != nil {
			var ce http2.ConnectionError
			if errors.As(err, &ce) {
				c.goAway(http2.ErrCode(ce))
			}
			c.fail(err)
			return
		}
	}
}

func (c *upConn) onFrame(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.HeadersFrame:
		b, err := c.headers.read(f)
		if se, ok := streamErrorOf(err); ok {
			c.reset(se.StreamID, se.Code, status.Errorf(codes.Internal, "the gRPC server broke HTTP/2 on the stream: %v", err))
			return nil
		}
		if err != nil {
			return err
		}
		c.onHeaders(b)
	case *http2.DataFrame:
		return c.onData(f)
	case *http2.SettingsFrame:
		if f.IsAck() {
			return nil
		}
		c.mu.Lock()
		err := f.ForeachSetting(func(s http2.Setting) error {
			if s.ID == http2.SettingMaxConcurrentStreams {
				c.maxStreams = s.Val
			}
			return c.win.setting(s, func(delta int64) {
				for _, call := range c.calls {
					call.win += delta
				}
			})
		})
		if err == nil {
			err = c.releaseLocked()
		}
		c.mu.Unlock()
		if err != nil {
			return err
		}
		return c.control(appendSettingsAck(nil))
	case *http2.WindowUpdateFrame:
		return c.onWindowUpdate(f.StreamID, int64(f.Increment))
	case *http2.PingFrame:
		if !f.IsAck() {
			return c.control(appendPingAck(nil, f.Data))
		}
	case *http2.RSTStreamFrame:
		code := codes.Internal
		switch f.ErrCode {
		case http2.ErrCodeRefusedStream:
			code = codes.Unavailable // not processed: safe to try elsewhere
		case http2.ErrCodeCancel:
			code = codes.Canceled
		}
		c.reset(f.StreamID, 0, status.Errorf(code, "the gRPC server reset the stream: %v", f.ErrCode))
	case *http2.GoAwayFrame:
		c.mu.Lock()
		c.goneAway = true
		var lost []*upCall
		for id, call := range c.calls {
			if id > f.LastStreamID {
				lost = append(lost, call)
			}
		}
		idle := len(c.calls) == len(lost)
		c.mu.Unlock()
		for _, call := range lost {
			c.finish(call, failed(status.Errorf(codes.Unavailable, "the gRPC server went away before taking the call (%v)", f.ErrCode)))
		}
		if idle {
			return errors.New("the server went away")
		}
	case *http2.PushPromiseFrame:
		return http2.ConnectionError(http2.ErrCodeProtocol) // push is off
	}
	return nil
}

func (c *upConn) onWindowUpdate(id uint32, n int64) error {
	c.mu.Lock()
	var o *outgoing
	if id != 0 {
		call := c.calls[id]
		if call == nil {
			c.mu.Unlock()
			return nil
		}
		o = &call.outgoing
	}
	err := c.win.update(o, n)
	if err == nil {
		err = c.releaseLocked()
	}
	c.mu.Unlock()
	if se, ok := streamErrorOf(err); ok { // one stream's window overflowed: that stream, not the connection
		c.reset(id, se.Code, status.Error(codes.Internal, "the gRPC server overflowed the stream's flow-control window"))
		return nil
	}
	return err
}

// releaseLocked sends what the server's windows now let out of requests.
func (c *upConn) releaseLocked() error {
	if b := c.win.release(nil, func(*outgoing) {}); len(b) > 0 {
		return c.control(b)
	}
	return nil
}

// reset ends a stream: the call fails with err; code, if set, is sent.
func (c *upConn) reset(id uint32, code http2.ErrCode, err error) {
	if code != 0 {
		c.control(appendRSTStream(nil, id, code))
	}
	c.mu.Lock()
	call := c.calls[id]
	c.mu.Unlock()
	if call != nil {
		c.finish(call, failed(err))
	}
}

func (c *upConn) goAway(code http2.ErrCode) { c.control(appendGoAway(nil, 0, code, "")) }

// control queues the read loop's frames without waiting on the socket.
func (c *upConn) control(b []byte) error {
	return c.u.batch.Write(c.w, b, maxQueued) // with the read loop's other writes: no wake of the write loop
}

func (c *upConn) lookup(id uint32) *upCall {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[id]
}

func (c *upConn) onHeaders(f *headerBlock) {
	call := c.lookup(f.streamID)
	if call == nil {
		return // cancelled meanwhile
	}
	if !call.header {
		call.header = true
		if s := f.pseudo("status"); s != "200" {
			c.reset(call.id, http2.ErrCodeCancel, status.Errorf(httpCode(s), "the gRPC server answered HTTP status %s", s))
			return
		}
		if !f.ended {
			reg := f.regular()
			call.hdr = make(meta, 0, len(reg))
			for _, hf := range reg {
				if err := call.hdr.addWire(hf.Name, hf.Value); err != nil {
					c.reset(call.id, http2.ErrCodeCancel, status.Errorf(codes.Internal, "the gRPC server's answer: %v", err))
					return
				}
			}
			return
		}
	}
	if !f.ended {
		c.reset(call.id, http2.ErrCodeProtocol, status.Error(codes.Internal, "the gRPC server sent a second header block that does not end the stream"))
		return
	}
	r, err := trailersOf(f)
	switch {
	case err != nil:
		r = failed(status.Errorf(codes.Internal, "the gRPC server's answer: %v", err))
	case r.status.Code() == codes.OK && !call.whole():
		r = failed(status.Errorf(codes.Internal, "the gRPC server answered OK with %d bytes, not one whole message", len(call.body)))
	case r.status.Code() == codes.OK:
		r.message, r.buf = call.message(), call.take()
	}
	r.header = call.hdr
	c.finish(call, r)
}

// trailersOf reads an answer's status and trailer metadata.
func trailersOf(f *headerBlock) (reply, error) {
	var r reply
	code, msg, details := "", "", ""
	for _, hf := range f.regular() {
		switch hf.Name {
		case "grpc-status":
			code = hf.Value
		case "grpc-message":
			msg = hf.Value
		case "grpc-status-details-bin":
			details = hf.Value
		default:
			if err := r.trailer.addWire(hf.Name, hf.Value); err != nil {
				return r, err
			}
		}
	}
	n, err := strconv.ParseUint(code, 10, 32)
	if err != nil {
		return r, fmt.Errorf("grpc-status %q", code)
	}
	if m, err := url.PathUnescape(msg); err == nil {
		msg = m
	}
	r.status = statusOK // most answers: made once, read only
	if n != 0 || msg != "" {
		r.status = status.New(codes.Code(n), msg)
	}
	if details != "" {
		var sp spb.Status
		if b, err := decodeBin(details); err == nil && proto.Unmarshal(b, &sp) == nil && sp.Code == int32(n) {
			r.status = status.FromProto(&sp)
		}
	}
	return r, nil
}

// httpCode is the gRPC status of an HTTP status a server answered
// instead of 200 (gRPC's mapping).
func httpCode(s string) codes.Code {
	switch s {
	case "400":
		return codes.Internal
	case "401":
		return codes.Unauthenticated
	case "403":
		return codes.PermissionDenied
	case "404":
		return codes.Unimplemented
	case "429", "502", "503", "504":
		return codes.Unavailable
	}
	return codes.Unknown
}

func (c *upConn) onData(f *http2.DataFrame) error {
	n := int(f.Length)
	if up := c.recvConn.add(n); up > 0 {
		if err := c.control(appendWindowUpdate(nil, 0, up)); err != nil {
			return err
		}
	}
	call := c.lookup(f.StreamID)
	if call == nil {
		return nil // cancelled meanwhile
	}
	if !call.header {
		c.reset(call.id, http2.ErrCodeProtocol, status.Error(codes.Internal, "the gRPC server sent data before headers"))
		return nil
	}
	switch problem, length := call.add(f.Data(), c.u.maxMessage); problem {
	case compressed:
		c.reset(call.id, http2.ErrCodeCancel, status.Error(codes.Internal, "the gRPC server compressed its answer, which meshd did not ask for"))
		return nil
	case tooBig:
		c.reset(call.id, http2.ErrCodeCancel, status.Errorf(codes.ResourceExhausted, "the gRPC server's answer is %d bytes, more than the %d meshd takes", length, c.u.maxMessage))
		return nil
	case second:
		c.reset(call.id, http2.ErrCodeCancel, status.Error(codes.Internal, "the gRPC server answered a unary call with more than one message"))
		return nil
	}
	if up := call.credit(n, f.StreamEnded()); up > 0 {
		if err := c.control(appendWindowUpdate(nil, call.id, up)); err != nil {
			return err
		}
	}
	if f.StreamEnded() {
		c.finish(call, failed(status.Error(codes.Internal, "the gRPC server ended the stream without trailers")))
	}
	return nil
}

// afterFunc is context.AfterFunc, but calls a context's own AfterFunc
// directly when it has one (a call delivered by the relay: conn's call
// contexts), where context.AfterFunc would add a context of its own and
// make the call's Done channel.
func afterFunc(ctx context.Context, f func()) (stop func() bool) {
	if af, ok := ctx.(interface{ AfterFunc(func()) func() bool }); ok {
		return af.AfterFunc(f)
	}
	return context.AfterFunc(ctx, f)
}
