package conn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/meshrpc/mesh/frame"
)

// inCall is a call the peer sent that this side has not answered yet.
type inCall struct {
	id         uint32
	req        Request
	ctx        context.Context
	cancel     context.CancelFunc // nil for an Async call (actx)
	actx       callCtx            // the ctx of an Async call
	answered   atomic.Bool        // an Async call's answer was taken
	cancelled  atomic.Bool        // the peer sent a cancel
	asm        frame.Assembler
	method     []byte
	pw         *io.PipeWriter // arg3, once the handler runs before it is whole
	dispatched bool
	discard    bool // the rest of the message is dropped (refused or abandoned)
}

// Bounds on what a peer can make this side hold for requests it has not
// finished sending: arg2 is buffered until whole, arg3 is streamed.
const (
	maxPartialCalls = 1024
	maxArg2Size     = 1 << 20
	streamThreshold = 256 << 10
)

// streamedBody is arg3 of a request served before it fully arrived: the bytes
// buffered so far, then the rest as the read loop receives it.
type streamedBody struct {
	head []byte
	pr   *io.PipeReader
}

func (b *streamedBody) Read(p []byte) (int, error) {
	if len(b.head) > 0 {
		n := copy(p, b.head)
		b.head = b.head[n:]
		return n, nil
	}
	return b.pr.Read(p)
}

// errHandlerDone ends a streamed request body whose handler already returned.
var errHandlerDone = errors.New("handler returned before reading the whole body")

func (c *Conn) onCallReq(f *frame.Frame, st *readState) error {
	if err := frame.DecodeCallReq(f.Payload, &st.req, &st.frag); err != nil {
		return err
	}
	if _, dup := st.assembling[f.ID]; dup {
		return &frame.ProtocolError{Rule: fmt.Sprintf("call req %d reuses the id of a call still arriving", f.ID)}
	}
	if c.opts.Relayer != nil && c.opts.Relayer.OfferCall(c, f, &st.req, &st.frag) {
		return nil
	}
	if len(st.assembling) >= maxPartialCalls {
		return &frame.ProtocolError{Rule: fmt.Sprintf("more than %d calls half sent at once", maxPartialCalls)}
	}
	call := &inCall{id: f.ID}
	call.req = Request{
		Service:  string(st.req.Service),
		Headers:  append(frame.Headers(nil), st.req.Headers...),
		Tracing:  st.req.Tracing,
		Checksum: st.req.Checksum,
		TTL:      time.Duration(st.req.TTL) * time.Millisecond,
	}
	if refusal := c.admit(call, st.req.TTL); refusal != nil {
		c.sendError(f.ID, refusal.Code, call.req.Tracing, refusal.Message)
		call.discard = true
	}
	return c.addReqFrame(call, &st.frag, st)
}

// admit registers a new inbound call, or says why it is refused.
func (c *Conn) admit(call *inCall, ttl uint32) *frame.Error {
	if ttl == 0 {
		return frame.Errorf(frame.ErrCodeTimeout, "call arrived with no time left (ttl 0)")
	}
	if c.opts.Handler == nil && c.opts.Async == nil {
		return frame.Errorf(frame.ErrCodeBadRequest, "this peer serves no calls (service %q)", call.req.Service)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.draining {
		return frame.Errorf(frame.ErrCodeDeclined, "connection is closing")
	}
	if _, dup := c.in[call.id]; dup {
		return frame.Errorf(frame.ErrCodeBadRequest, "call id %d is already in use", call.id)
	}
	c.in[call.id] = call
	if c.opts.Async != nil {
		call.actx.deadline = time.Now().Add(call.req.TTL)
		call.ctx = &call.actx
		return nil
	}
	call.ctx, call.cancel = context.WithTimeout(c.base, call.req.TTL)
	return nil
}

func (c *Conn) onCallReqContinue(f *frame.Frame, st *readState) error {
	if err := frame.DecodeContinue(f.Payload, &st.frag); err != nil {
		return err
	}
	call := st.assembling[f.ID]
	if call == nil {
		if c.opts.Relayer != nil {
			c.opts.Relayer.Frame(c, f, &st.frag)
		}
		return nil // else the rest of a call we already answered or never saw
	}
	return c.addReqFrame(call, &st.frag, st)
}

func (c *Conn) addReqFrame(call *inCall, frag *frame.Fragment, st *readState) error {
	limit := min(c.opts.MaxMessageSize, maxArg2Size)
	var tooBig bool
	first, err := call.asm.Add(frag)
	if err != nil {
		return err
	}
	for i, chunk := range frag.Chunks[:frag.NumChunks] {
		if call.discard {
			break
		}
		switch first + i {
		case 0:
			if len(call.method)+len(chunk) > frame.MaxArg1Size { // the protocol's bound, checked on receipt too
				c.abandon(call, frame.Errorf(frame.ErrCodeBadRequest, "arg1 (the method) exceeds %d bytes", frame.MaxArg1Size))
				continue
			}
			call.method = append(call.method, chunk...)
		case 1:
			call.req.Arg2 = append(call.req.Arg2, chunk...)
			tooBig = len(call.req.Arg2) > limit
		case 2:
			if call.pw != nil {
				if _, err := call.pw.Write(chunk); err != nil {
					call.discard = true
				}
				continue
			}
			call.req.Arg3 = append(call.req.Arg3, chunk...)
			// A message still arriving whose arg3 passed streamThreshold goes
			// to the handler with the rest of arg3 streamed, so a large body
			// is never held whole; smaller ones skip the pipe's hand-offs.
			if frag.More() && !call.dispatched && len(call.req.Arg3) >= streamThreshold {
				pr, pw := io.Pipe()
				call.pw = pw
				// The body ends with its call: the caller cancelled, the TTL
				// ran out, or the connection closed before the rest came (a
				// joined connection's close has no read loop to end it).
				context.AfterFunc(call.ctx, func() {
					pr.CloseWithError(frame.Errorf(frame.ErrCodeCancelled, "the call ended while its body was arriving"))
				})
				call.req.Body = &streamedBody{head: call.req.Arg3, pr: pr}
				call.req.Arg3 = nil
				c.runHandler(call)
			}
		}
	}
	if tooBig && !call.discard {
		c.abandon(call, frame.Errorf(frame.ErrCodeBadRequest, "request arg2 exceeds %d bytes", limit))
	}
	if !call.asm.Done() {
		st.assembling[call.id] = call
		return nil
	}
	delete(st.assembling, call.id)
	if call.pw != nil {
		call.pw.Close()
	}
	if !call.discard && !call.dispatched {
		c.runHandler(call)
	}
	return nil
}

// dropPartial forgets a cancelled request that has not fully arrived: the
// rest of it is dropped, and a handler reading its body sees the cancel. So a
// peer cancelling half-sent calls (a relay giving up on one) frees what
// they held here at once.
func (c *Conn) dropPartial(call *inCall, st *readState) {
	if st.assembling[call.id] != call {
		return
	}
	delete(st.assembling, call.id)
	call.discard = true
	if call.pw != nil {
		call.pw.CloseWithError(frame.Errorf(frame.ErrCodeCancelled, "call cancelled by caller"))
	}
	if !call.dispatched {
		c.release(call)
	}
}

// abandon answers a call that cannot be served and drops the rest of it.
func (c *Conn) abandon(call *inCall, e *frame.Error) {
	call.discard = true
	if call.pw != nil {
		call.pw.CloseWithError(e)
		return // the handler is running and will answer
	}
	c.sendError(call.id, e.Code, call.req.Tracing, e.Message)
	c.release(call)
}

func (c *Conn) runHandler(call *inCall) {
	call.dispatched = true
	call.req.Method = string(call.method)
	if c.opts.Async != nil {
		c.opts.Async(call.ctx, &call.req, func(res *Response, err error) {
			if call.answered.CompareAndSwap(false, true) {
				c.answer(call, res, err)
			}
		})
		return
	}
	go c.serve(call)
}

// serve runs the handler and sends its answer.
func (c *Conn) serve(call *inCall) {
	res, err := c.opts.Handler(call.ctx, &call.req)
	c.answer(call, res, err)
}

// answer sends a handler's answer to call, and forgets the call.
func (c *Conn) answer(call *inCall, res *Response, err error) {
	defer c.release(call)
	if b, ok := call.req.Body.(*streamedBody); ok {
		b.pr.CloseWithError(errHandlerDone)
	}
	t := call.req.Tracing
	switch {
	case call.cancelled.Load():
		c.sendError(call.id, frame.ErrCodeCancelled, t, "call cancelled by caller")
	case errors.Is(call.ctx.Err(), context.DeadlineExceeded):
		c.sendError(call.id, frame.ErrCodeTimeout, t, fmt.Sprintf("call outlived its TTL of %v", call.req.TTL))
	case call.ctx.Err() != nil:
		// The connection closed under the call: nobody to answer.
	case err != nil:
		var e *frame.Error
		if !errors.As(err, &e) {
			e = &frame.Error{Code: frame.ErrCodeUnexpected, Message: err.Error()}
		}
		c.sendError(call.id, e.Code, t, e.Message)
	case res == nil:
		c.sendError(call.id, frame.ErrCodeUnexpected, t, "handler returned no response")
	default:
		if err := c.respond(call, res); err != nil {
			var e *frame.Error
			if errors.As(err, &e) && e.Code != frame.ErrCodeNetwork {
				c.sendError(call.id, e.Code, t, e.Message)
			}
		}
	}
}

func (c *Conn) respond(call *inCall, res *Response) error {
	mw := c.writers.Get().(*frame.MessageWriter)
	defer c.writers.Put(mw)
	tr := res.Tracing
	if tr == (frame.Tracing{}) {
		tr = call.req.Tracing
	}
	m := frame.CallRes{Code: res.Code, Tracing: tr, Headers: res.Headers, Checksum: res.Checksum}
	if err := mw.BeginCallRes(call.id, &m); err != nil {
		return frame.Errorf(frame.ErrCodeUnexpected, "bad response: %v", err)
	}
	return c.writeArgs(mw, nil, res.Arg2, res.Arg3, res.Body)
}

// end cancels call's context.
func (call *inCall) end() {
	if call.cancel != nil {
		call.cancel()
	} else if call.ctx == &call.actx {
		call.actx.cancel()
	}
}

// release forgets an answered call.
func (c *Conn) release(call *inCall) {
	call.end()
	c.mu.Lock()
	if c.in[call.id] == call {
		delete(c.in, call.id)
	}
	c.checkIdleLocked()
	c.mu.Unlock()
}
