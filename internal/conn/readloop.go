package conn

import (
	"bufio"
	"fmt"
	"io"

	"github.com/meshrpc/mesh/frame"
)

// readLoop decodes frames and routes them until the connection ends.
func (c *Conn) readLoop() {
	r := frame.NewReader(&directReader{br: bufio.NewReaderSize(c.nc, readBuffer), r: c.nc})
	st := readState{assembling: make(map[uint32]*inCall)}
	for {
		f, err := r.ReadFrame()
		if err == nil {
			c.frames.Add(1)
			err = c.dispatch(f, &st)
		}
		if err != nil {
			c.readFailed(err, &st)
			return
		}
	}
}

// readFailed ends the connection when what the peer sent ends or breaks
// the protocol (err).
func (c *Conn) readFailed(err error, st *readState) {
	for _, call := range st.assembling {
		if call.pw != nil {
			call.pw.CloseWithError(&frame.Error{Code: frame.ErrCodeNetwork, Message: "connection closed mid-request"})
		}
	}
	if frame.IsProtocolError(err) {
		c.log.Warn("protocol error from peer, closing connection", "err", err)
		c.sendError(frame.ConnErrorID, frame.ErrCodeProtocol, frame.Tracing{}, err.Error())
	}
	if err == io.EOF {
		err = nil
		c.mu.Lock()
		if !c.draining && (len(c.out) > 0 || len(c.in) > 0) {
			err = io.ErrUnexpectedEOF
		}
		c.mu.Unlock()
		if err == nil {
			err = io.EOF
		}
	}
	c.Fail(err)
}

// readBuffer batches small frames' reads; larger reads skip it (directReader).
const readBuffer = 16 << 10

// directReader is a bufio.Reader that lets large reads skip its buffer:
// small frames arrive many to a system call, a large frame's payload goes
// straight from the socket to the frame buffer instead of being copied twice.
type directReader struct {
	br *bufio.Reader
	r  io.Reader
}

func (d *directReader) Read(p []byte) (int, error) {
	if n := d.br.Buffered(); len(p) >= readBuffer && n < len(p) {
		if n > 0 {
			return d.br.Read(p[:n])
		}
		return d.r.Read(p)
	}
	return d.br.Read(p)
}

// readState is what only the read loop touches.
type readState struct {
	assembling map[uint32]*inCall // requests whose last frame has not come
	req        frame.CallReq
	res        frame.CallRes
	frag       frame.Fragment
}

func (c *Conn) dispatch(f *frame.Frame, st *readState) error {
	switch f.Type {
	case frame.TypeCallReq:
		return c.onCallReq(f, st)
	case frame.TypeCallReqContinue:
		return c.onCallReqContinue(f, st)
	case frame.TypeCallRes:
		return c.onCallRes(f, st)
	case frame.TypeCallResContinue:
		return c.onCallResContinue(f, st)
	case frame.TypeError:
		return c.onError(f)
	case frame.TypeCancel:
		if _, err := frame.DecodeCancel(f.Payload); err != nil {
			return err
		}
		c.mu.Lock()
		call := c.in[f.ID]
		c.mu.Unlock()
		if call != nil {
			call.cancelled.Store(true)
			call.end()
			c.dropPartial(call, st)
		} else if c.opts.Relayer != nil {
			c.opts.Relayer.Frame(c, f, nil)
		}
		return nil
	case frame.TypeClaim:
		_, _, err := frame.DecodeClaim(f.Payload)
		return err
	case frame.TypePingReq:
		var buf [frame.HeaderSize]byte
		c.w.Write(frame.AppendPing(buf[:0], frame.TypePingRes, f.ID))
		return nil
	case frame.TypePingRes:
		c.mu.Lock()
		ch := c.pings[f.ID]
		delete(c.pings, f.ID)
		c.mu.Unlock()
		if ch != nil {
			close(ch)
		}
		return nil
	case frame.TypeInitReq, frame.TypeInitRes:
		return &frame.ProtocolError{Rule: fmt.Sprintf("%s after the handshake", f.Type)}
	}
	c.log.Debug("ignoring frame of unknown type", "type", f.Type.String(), "call_id", f.ID)
	return nil
}

func (c *Conn) onError(f *frame.Frame) error {
	m, err := frame.DecodeError(f.Payload)
	if err != nil {
		return err
	}
	if f.ID == frame.ConnErrorID {
		return &frame.Error{Code: m.Code, Message: "peer closed the connection: " + string(m.Message)}
	}
	c.mu.Lock()
	call := c.out[f.ID]
	delete(c.out, f.ID)
	c.checkIdleLocked()
	c.mu.Unlock()
	if call != nil {
		call.finish(&frame.Error{Code: m.Code, Message: string(m.Message)})
	} else if c.opts.Relayer != nil {
		c.opts.Relayer.Frame(c, f, nil)
	}
	return nil
}
