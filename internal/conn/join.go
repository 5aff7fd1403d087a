package conn

import (
	"io"
	"net"
	"time"

	"github.com/meshrpc/mesh/frame"
)

// Join returns two connections joined in memory, with no socket, no
// handshake and no read loop: the frames one end writes are dispatched on
// the other end by the goroutine that writes them, as its read loop would
// dispatch them. It is for meshd's own in-process peers (the gRPC
// gateway's calls into the relay): across a socket pair each frame cost a
// write, a read and a thread wake-up on each side.
//
// Writes never wait for room (outbox.Writer.Inline): what a peer may make
// either end hold is bounded by whoever feeds it. Each end's peer is the
// other's Options, as a handshake would have told it.
func Join(a, b Options) (*Conn, *Conn) {
	ja, jb := &joint{}, &joint{}
	ca, cb := newConn(ja, a), newConn(jb, b)
	ja.to, jb.to = cb, ca
	ja.st.assembling = make(map[uint32]*inCall)
	jb.st.assembling = make(map[uint32]*inCall)
	ca.peer, cb.peer = cb.self(), ca.self()
	for _, c := range []*Conn{ca, cb} {
		c.w.Inline()
		go c.w.Loop()
		if c.opts.IdleTimeout > 0 {
			c.idleCheck(c.frames.Load())
		}
	}
	return ca, cb
}

// self is what a handshake tells the peer about this end.
func (c *Conn) self() Peer {
	h := c.initHeaders()
	return Peer{HostPort: h[frame.InitHostPort], ProcessName: h[frame.InitProcessName], Headers: h}
}

// joint is the net.Conn under one end of a Join: writing to it dispatches
// whole frames (an outbox only ever writes whole frames) on the other end.
// Only the writer's one flushing goroutine writes at a time, so the
// dispatch state is the read loop's, unshared.
type joint struct {
	to *Conn
	st readState
	f  frame.Frame
}

func (j *joint) Write(b []byte) (int, error) {
	if j.to.Closed() {
		return 0, net.ErrClosed
	}
	for off := 0; off < len(b); {
		if len(b)-off < frame.HeaderSize {
			return off, io.ErrShortWrite // never: an outbox writes whole frames
		}
		h, err := frame.ParseHeader(b[off : off+frame.HeaderSize])
		if err == nil && int(h.Size) > len(b)-off {
			err = io.ErrShortWrite
		}
		if err == nil {
			n := int(h.Size)
			j.f = frame.Frame{Header: h, Payload: b[off+frame.HeaderSize : off+n], Raw: b[off : off+n]}
			j.to.frames.Add(1)
			err = j.to.dispatch(&j.f, &j.st)
			off += n
		}
		if err != nil {
			j.to.readFailed(err, &j.st)
			return off, err
		}
	}
	return len(b), nil
}

// Close ends the other end too, on a goroutine of its own: this end's
// close is still running, and the other's would close this one again.
func (j *joint) Close() error {
	go j.to.readFailed(io.EOF, &readState{})
	return nil
}

func (j *joint) Read([]byte) (int, error)         { return 0, io.EOF } // no read loop reads it
func (j *joint) LocalAddr() net.Addr              { return jointAddr{} }
func (j *joint) RemoteAddr() net.Addr             { return jointAddr{} }
func (j *joint) SetDeadline(time.Time) error      { return nil }
func (j *joint) SetReadDeadline(time.Time) error  { return nil }
func (j *joint) SetWriteDeadline(time.Time) error { return nil }

// jointAddr names both ends of a Join.
type jointAddr struct{}

func (jointAddr) Network() string { return "memory" }
func (jointAddr) String() string  { return "in-process" }
