package conn

import (
	"io"
	"net"
	"time"

	"github.com/meshrpc/mesh/frame"
)

// Join returns two connections joined in memory, with no socket, no
// handshake and no read loop: the frames one end writes are dispatched on
// the other end by the goroutine that flushes them, as its read loop would
// dispatch them. It is for meshd's own in-process apps (the gRPC gateway
// and the gRPC servers it delivers to) and the relay: across a socket pair
// each frame cost a write, a read and a thread wake-up on each side.
//
// The ends differ in who flushes. The relay's end flushes every write on
// the writing goroutine (outbox.Writer.Inline), so a call the relay
// forwards to the app is dispatched there at once; it never waits for
// room (what the app may make it hold is bounded by whoever feeds the app).
// The app's end keeps a socket's rules: what its calls' and handlers'
// goroutines write they flush themselves, what it writes while dispatching
// (an error for a call it refuses, a ping's answer) waits for its write
// loop, so the relay, which may hold a call's lock while it writes to the
// app, is never entered again from inside that write. Each end's peer is
// the other's Options, as a handshake would have told it.
func Join(app, relay Options) (appEnd, relayEnd *Conn) {
	ja, jr := &joint{}, &joint{}
	appEnd, relayEnd = newConn(ja, app), newConn(jr, relay)
	ja.to, jr.to = relayEnd, appEnd
	ja.st.assembling = make(map[uint32]*inCall)
	jr.st.assembling = make(map[uint32]*inCall)
	appEnd.peer, relayEnd.peer = relayEnd.self(), appEnd.self()
	relayEnd.w.Inline()
	for _, c := range []*Conn{appEnd, relayEnd} {
		go c.w.Loop()
		if c.opts.IdleTimeout > 0 {
			c.idleCheck(c.frames.Load())
		}
	}
	return appEnd, relayEnd
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
			// What the peer does with a broken frame is its own: the write
			// went through, as on a socket, and the rest is dropped. On a
			// goroutine of its own: the end that fails waits for its write
			// loop as it closes, and that loop may be this goroutine.
			half := &readState{assembling: j.st.assembling} // calls half sent: theirs end too
			j.st.assembling = make(map[uint32]*inCall)
			go j.to.readFailed(err, half)
			return len(b), nil
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
