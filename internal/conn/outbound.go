package conn

import (
	"context"
	"io"
	"sync/atomic"
	"time"

	"github.com/meshrpc/mesh/frame"
)

// outCall is a call this side sent and is waiting on.
type outCall struct {
	id     uint32
	stream bool
	limit  int
	done   chan struct{}
	state  atomic.Int32 // callPending, callStreaming, callFinished
	res    Response
	err    error
	asm    frame.Assembler
	pw     *io.PipeWriter // arg3 of a streamed response
	// Go's: told the answer instead of done, and the call's trace for
	// Abandon's cancel.
	answer  func(*Response, error)
	tracing frame.Tracing
}

const (
	callPending int32 = iota
	callStreaming
	callFinished
)

// finish completes the call with err (nil: the whole response arrived).
func (o *outCall) finish(err error) {
	if o.state.CompareAndSwap(callPending, callFinished) {
		o.err = err
		if o.answer != nil {
			if err != nil {
				o.answer(nil, err)
			} else {
				o.answer(&o.res, nil)
			}
			return
		}
		close(o.done)
		return
	}
	if o.state.CompareAndSwap(callStreaming, callFinished) {
		if err != nil {
			o.pw.CloseWithError(err)
		} else {
			o.pw.Close()
		}
	}
}

// Call sends req and waits for its answer. The context's deadline becomes the
// call's TTL; when it passes the call fails with ErrCodeTimeout and the peer
// is sent a cancel. A response with an application error is returned with a
// nil error: check Response.Code.
func (c *Conn) Call(ctx context.Context, req *Request) (*Response, error) {
	deadline, ok := ctx.Deadline()
	if !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.opts.DefaultTimeout)
		defer cancel()
		deadline, _ = ctx.Deadline()
	}
	ttl := time.Until(deadline)
	if ttl <= 0 {
		return nil, deadlineError(&frame.Error{Code: frame.ErrCodeTimeout, Message: "deadline passed before the call was sent"})
	}

	call := &outCall{
		id:     c.newID(),
		stream: req.StreamResponse,
		limit:  c.opts.MaxMessageSize,
		done:   make(chan struct{}),
	}
	if err := c.register(call); err != nil {
		return nil, err
	}

	if err := c.send(call.id, req, ttlMillis(ttl)); err != nil {
		c.forget(call.id)
		return nil, err
	}

	select {
	case <-call.done:
		if call.err != nil {
			return nil, pastDeadline(ctx, call.err)
		}
		if call.stream {
			context.AfterFunc(ctx, func() {
				if c.forget(call.id) {
					call.finish(ctxError(ctx))
				}
			})
		}
		return &call.res, nil
	case <-ctx.Done():
		if c.forget(call.id) {
			c.sendCancel(call.id, req.Tracing, cancelWhy(ctx))
		}
		return nil, ctxError(ctx)
	}
}

// Go sends req like Call but does not wait, and returns the call's id:
// answer is told the answer, or why there is none, once, on the goroutine
// that brings it (the read loop, or a joined peer's writer), so it must
// not block. It sets no timer: the call ends when the peer answers, which
// a peer that ends every call at its ttl (meshd's relay) does by then at
// the latest, when the connection ends, or when Abandon gives it up. For
// calls whose response is not streamed.
func (c *Conn) Go(ttl time.Duration, req *Request, answer func(*Response, error)) uint32 {
	if ttl <= 0 {
		answer(nil, deadlineError(&frame.Error{Code: frame.ErrCodeTimeout, Message: "deadline passed before the call was sent"}))
		return 0
	}
	call := &outCall{id: c.newID(), limit: c.opts.MaxMessageSize, answer: answer, tracing: req.Tracing}
	err := c.register(call)
	if err == nil {
		err = c.send(call.id, req, ttlMillis(ttl))
		if err != nil && !c.forget(call.id) {
			return 0 // finished already: the connection closed
		}
	}
	if err != nil {
		answer(nil, err)
		return 0
	}
	return call.id
}

// register adds a call this side sends to those it waits on, unless the
// connection is closing or closed.
func (c *Conn) register(call *outCall) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.draining {
		return ErrClosing
	}
	select {
	case <-c.closed:
		return c.networkError(c.closeErr)
	default:
	}
	c.out[call.id] = call
	return nil
}

// Abandon gives up a call made with Go, if it is still waiting: the peer
// is told to cancel it, and its answer is err.
func (c *Conn) Abandon(id uint32, err error) {
	c.mu.Lock()
	call := c.out[id]
	if call != nil && call.answer != nil {
		delete(c.out, id)
		c.checkIdleLocked()
	}
	c.mu.Unlock()
	if call == nil || call.answer == nil {
		return
	}
	why := "cancelled by caller"
	if frame.CodeOf(err) == frame.ErrCodeTimeout {
		why = "deadline exceeded"
	}
	c.sendCancel(id, call.tracing, why)
	call.finish(err)
}

// cancelWhy is the reason a cancel gives for a call whose ctx ended.
func cancelWhy(ctx context.Context) string {
	if ctx.Err() == context.Canceled {
		return "cancelled by caller"
	}
	return "deadline exceeded"
}

// pastDeadline marks a Timeout answer that came once ctx's deadline had
// passed (the peer's timer beat ours, which it does: the ttl it counts from
// arrival is the time left when sent, rounded up) as the deadline's, like
// ctxError.
func pastDeadline(ctx context.Context, err error) error {
	if e, ok := err.(*frame.Error); ok && e.Code == frame.ErrCodeTimeout && !time.Now().Before(deadlineOf(ctx)) {
		return deadlineError(e)
	}
	return err
}

func deadlineOf(ctx context.Context) time.Time {
	d, _ := ctx.Deadline()
	return d
}

// ttlMillis rounds up so a call with time left never carries a ttl of 0.
func ttlMillis(d time.Duration) uint32 {
	ms := (d + time.Millisecond - 1) / time.Millisecond
	return uint32(min(ms, 1<<32-1))
}

// send writes the request's frames.
func (c *Conn) send(id uint32, req *Request, ttl uint32) error {
	mw := c.writers.Get().(*frame.MessageWriter)
	defer c.writers.Put(mw)
	m := frame.CallReq{
		TTL:      ttl,
		Tracing:  req.Tracing,
		Service:  []byte(req.Service),
		Headers:  req.Headers,
		Checksum: req.Checksum,
	}
	if err := mw.BeginCallReq(id, &m); err != nil {
		return frame.Errorf(frame.ErrCodeBadRequest, "%v", err)
	}
	return c.writeArgs(mw, []byte(req.Method), req.Arg2, req.Arg3, req.Body)
}

// writeArgs writes the three args of a begun message and closes it.
func (c *Conn) writeArgs(mw *frame.MessageWriter, arg1, arg2, arg3 []byte, body io.Reader) error {
	mw.Write(arg1)
	mw.EndArg()
	mw.Write(arg2)
	mw.EndArg()
	if body != nil {
		src := &sourceReader{r: body}
		if _, err := io.Copy(mw, src); err != nil {
			if src.err != nil {
				return frame.Errorf(frame.ErrCodeUnexpected, "reading body: %v", err)
			}
			return c.networkError(err)
		}
	} else {
		mw.Write(arg3)
	}
	if err := mw.Close(); err != nil {
		if frame.IsProtocolError(err) {
			return frame.Errorf(frame.ErrCodeBadRequest, "%v", err)
		}
		return c.networkError(err)
	}
	return nil
}

// forget drops a call this side no longer waits for; it reports whether the
// call was still outstanding.
func (c *Conn) forget(id uint32) bool {
	c.mu.Lock()
	_, ok := c.out[id]
	delete(c.out, id)
	c.checkIdleLocked()
	c.mu.Unlock()
	return ok
}

func (c *Conn) sendCancel(id uint32, t frame.Tracing, why string) {
	var buf [64]byte
	b, _ := frame.AppendCancel(buf[:0], id, frame.Cancel{Tracing: t, Why: []byte(why)})
	c.w.Write(b)
}

// answered finds the call an answer frame belongs to. Frames of calls it does
// not know go to the Relayer, if any; else they are late or duplicate answers
// to calls given up on, and dropped.
func (c *Conn) answered(f *frame.Frame, frag *frame.Fragment) *outCall {
	c.mu.Lock()
	call := c.out[f.ID]
	c.mu.Unlock()
	if call == nil && c.opts.Relayer != nil {
		c.opts.Relayer.Frame(c, f, frag)
	}
	return call
}

func (c *Conn) onCallRes(f *frame.Frame, st *readState) error {
	if err := frame.DecodeCallRes(f.Payload, &st.res, &st.frag); err != nil {
		return err
	}
	call := c.answered(f, &st.frag)
	if call == nil {
		return nil
	}
	if call.asm.Started() {
		return &frame.ProtocolError{Rule: "second call res for one call"}
	}
	call.res = Response{
		Code:     st.res.Code,
		Headers:  append(frame.Headers(nil), st.res.Headers...),
		Tracing:  st.res.Tracing,
		Checksum: st.res.Checksum,
	}
	return c.addResFrame(f.ID, call, &st.frag)
}

func (c *Conn) onCallResContinue(f *frame.Frame, st *readState) error {
	if err := frame.DecodeContinue(f.Payload, &st.frag); err != nil {
		return err
	}
	call := c.answered(f, &st.frag)
	if call == nil {
		return nil
	}
	if !call.asm.Started() {
		return &frame.ProtocolError{Rule: "call res continue before call res"}
	}
	return c.addResFrame(f.ID, call, &st.frag)
}

func (c *Conn) addResFrame(id uint32, call *outCall, frag *frame.Fragment) error {
	first, err := call.asm.Add(frag)
	if err != nil {
		return err
	}
	var failed error
	for i, chunk := range frag.Chunks[:frag.NumChunks] {
		switch arg := first + i; {
		case arg == 1:
			call.res.Arg2 = append(call.res.Arg2, chunk...)
			if frag.Ends(i) && call.stream {
				pr, pw := io.Pipe()
				call.pw, call.res.Body = pw, pr
				if call.state.CompareAndSwap(callPending, callStreaming) {
					close(call.done)
				}
			}
		case arg == 2 && call.stream:
			if _, err := call.pw.Write(chunk); err != nil {
				failed = err // the caller closed the body: drop the rest
			}
		case arg == 2:
			call.res.Arg3 = append(call.res.Arg3, chunk...)
		}
		if len(call.res.Arg2)+len(call.res.Arg3) > call.limit {
			failed = frame.Errorf(frame.ErrCodeBadRequest, "response exceeds %d bytes", call.limit)
		}
	}
	if failed != nil || call.asm.Done() {
		if c.forget(id) {
			call.finish(failed)
		}
	}
	return nil
}

// sourceReader remembers its reader's error, to tell a failing body from a
// failing connection when copying one to the other.
type sourceReader struct {
	r   io.Reader
	err error
}

func (s *sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		s.err = err
	}
	return n, err
}
