package grpcgate

import (
	"encoding/binary"

	"golang.org/x/net/http2"
)

// window is the send side of HTTP/2's flow control on one connection, for
// both of meshd's ends (h2conn serving apps, upstream calling servers):
// what the peer lets this side send, in all and per stream, and the
// messages waiting for it to let more. Its owner holds a lock around it.
type window struct {
	conn     int64 // the connection's window
	init     int64 // the peer's initial window of a stream
	maxFrame int   // the largest frame payload the peer takes
	blocked  []*outgoing
}

func newWindow() window { return window{conn: 65535, init: 65535, maxFrame: 16384} }

// outgoing is one stream's side of the window, and its message while it
// waits.
type outgoing struct {
	id    uint32
	win   int64   // the stream's window
	pre   [5]byte // the message's gRPC framing
	head  []byte  // of pre, past what the windows let out so far
	rest  []byte  // the message, past what the windows let out so far
	after []byte  // frames that follow it (an answer's trailers); none: its last DATA ends the stream
	gone  bool    // reset or finished: nothing more goes out
}

// send appends DATA frames of msg for o, as much as the windows allow,
// then o.after once all went out; it reports whether all did. What did
// not waits for release.
func (w *window) send(b []byte, o *outgoing, msg, after []byte) ([]byte, bool) {
	o.pre[0] = 0 // uncompressed
	binary.BigEndian.PutUint32(o.pre[1:], uint32(len(msg)))
	o.head, o.rest, o.after = o.pre[:], msg, after
	b, done := w.some(b, o)
	if !done {
		w.blocked = append(w.blocked, o)
	}
	return b, done
}

// some appends what the windows let out of o's message.
func (w *window) some(b []byte, o *outgoing) ([]byte, bool) {
	left := int64(len(o.head) + len(o.rest))
	n := min(left, w.conn, o.win)
	if n < 0 {
		n = 0
	}
	w.conn -= n
	o.win -= n
	last := n == left
	h := min(int(n), len(o.head))
	b = appendData(b, o.id, w.maxFrame, o.head[:h], o.rest[:int(n)-h], last && o.after == nil)
	o.head, o.rest = o.head[h:], o.rest[int(n)-h:]
	if !last {
		return b, false
	}
	return append(b, o.after...), true
}

// release appends what the windows now let out of the waiting messages;
// done is told of each that went out whole.
func (w *window) release(b []byte, done func(*outgoing)) []byte {
	kept := w.blocked[:0]
	for _, o := range w.blocked {
		if o.gone {
			continue
		}
		if w.conn <= 0 || o.win <= 0 {
			kept = append(kept, o)
			continue
		}
		var all bool
		if b, all = w.some(b, o); all {
			done(o)
		} else {
			kept = append(kept, o)
		}
	}
	clear(w.blocked[len(kept):])
	w.blocked = kept
	return b
}

// update applies a WINDOW_UPDATE to the connection (o nil) or a stream.
func (w *window) update(o *outgoing, n int64) error {
	if o == nil {
		if w.conn += n; w.conn > 1<<31-1 {
			return http2.ConnectionError(http2.ErrCodeFlowControl)
		}
		return nil
	}
	if o.win += n; o.win > 1<<31-1 {
		return http2.StreamError{StreamID: o.id, Code: http2.ErrCodeFlowControl}
	}
	return nil
}

// setting checks one of the peer's SETTINGS and applies those that bear on
// sending; each open stream's window moves with the initial one (adjust).
func (w *window) setting(s http2.Setting, adjust func(delta int64)) error {
	if err := s.Valid(); err != nil {
		return err
	}
	switch s.ID {
	case http2.SettingInitialWindowSize:
		delta := int64(s.Val) - w.init
		w.init = int64(s.Val)
		adjust(delta)
	case http2.SettingMaxFrameSize:
		w.maxFrame = int(s.Val)
	}
	return nil
}

// incoming is one stream's message on its way in: gRPC's framing (a flag
// byte, a 4-byte length, the bytes) read as it arrives, one message at
// most, and the stream's side of the receive window.
type incoming struct {
	buf  *[]byte // body's buffer, from buffers
	body []byte  // the message so far, its framing included
	want int     // the bytes of the whole framed message, once its prefix came
	recv int     // bytes received and not yet given back to the stream window
}

// Why add refuses what came.
const (
	fine       = iota
	compressed // the message is compressed: meshd never asks for that
	tooBig     // its length is past the limit
	second     // a second message follows: a stream, not a unary call
)

// add appends data; a message whose length passes max is refused before
// its bytes are kept.
func (in *incoming) add(data []byte, max int) (problem int, length uint32) {
	if in.buf == nil {
		in.buf = getBuffer(len(data))
		in.body = *in.buf
	}
	in.body = append(in.body, data...)
	if in.want == 0 && len(in.body) >= 5 {
		length = binary.BigEndian.Uint32(in.body[1:5])
		switch {
		case in.body[0] != 0:
			return compressed, length
		case int64(length) > int64(max):
			return tooBig, length
		}
		in.want = 5 + int(length)
		if cap(in.body) < in.want {
			in.body = append(make([]byte, 0, in.want), in.body...)
		}
	}
	if in.want > 0 && len(in.body) > in.want {
		return second, length
	}
	return fine, length
}

// whole reports whether one whole message came.
func (in *incoming) whole() bool { return in.want > 0 && len(in.body) == in.want }

// message is the message without its framing (whole only).
func (in *incoming) message() []byte { return in.body[5:] }

// take hands over the message's buffer, holding the body, for whoever
// ends up holding the message to release (nil: none).
func (in *incoming) take() *[]byte {
	buf := in.buf
	if buf != nil {
		*buf = in.body
	}
	in.buf = nil
	return buf
}

// release gives the message's buffer back once no one holds it.
func (in *incoming) release() {
	putBuffer(in.buf, in.body)
	in.buf, in.body = nil, nil
}

// credit counts n bytes received on the stream, and is the window update
// to send for it (0: none yet; none once the stream ended).
func (in *incoming) credit(n int, ended bool) uint32 {
	if in.recv += n; in.recv < recvStreamWindow/4 || ended {
		return 0
	}
	n, in.recv = in.recv, 0
	return uint32(n)
}

// connCredit is a connection's side of the receive window.
type connCredit int

// add counts n bytes received, and is the window update to send (0: none
// yet): given back a quarter of the window at a time.
func (c *connCredit) add(n int) uint32 {
	if *c += connCredit(n); *c < recvConnWindow/4 {
		return 0
	}
	n, *c = int(*c), 0
	return uint32(n)
}
