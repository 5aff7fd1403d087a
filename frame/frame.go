package frame

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Type is a frame's message type byte.
type Type uint8

// The message types of TChannel v2.
const (
	TypeInitReq         Type = 0x01
	TypeInitRes         Type = 0x02
	TypeCallReq         Type = 0x03
	TypeCallRes         Type = 0x04
	TypeCallReqContinue Type = 0x13
	TypeCallResContinue Type = 0x14
	TypeCancel          Type = 0xC0
	TypeClaim           Type = 0xC1
	TypePingReq         Type = 0xD0
	TypePingRes         Type = 0xD1
	TypeError           Type = 0xFF
)

func (t Type) String() string {
	switch t {
	case TypeInitReq:
		return "init req"
	case TypeInitRes:
		return "init res"
	case TypeCallReq:
		return "call req"
	case TypeCallRes:
		return "call res"
	case TypeCallReqContinue:
		return "call req continue"
	case TypeCallResContinue:
		return "call res continue"
	case TypeCancel:
		return "cancel"
	case TypeClaim:
		return "claim"
	case TypePingReq:
		return "ping req"
	case TypePingRes:
		return "ping res"
	case TypeError:
		return "error"
	}
	return fmt.Sprintf("type 0x%02x", uint8(t))
}

// Limits of the wire format.
const (
	HeaderSize     = 16
	MaxFrameSize   = 0xFFFF
	MaxPayloadSize = MaxFrameSize - HeaderSize
	// MaxArg1Size bounds arg1 (the method name) so that it fits the first frame.
	MaxArg1Size = 16 * 1024
	// ConnErrorID is the message id of errors about the whole connection.
	ConnErrorID = 0xFFFFFFFF
)

// Header is the fixed 16-byte frame header.
type Header struct {
	Size uint16 // the whole frame, header included
	Type Type
	ID   uint32
}

// PayloadSize is the number of payload bytes that follow the header.
func (h Header) PayloadSize() int { return int(h.Size) - HeaderSize }

// ParseHeader decodes a frame header from the first 16 bytes of b.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, errShort("frame header", HeaderSize, len(b))
	}
	h := Header{
		Size: binary.BigEndian.Uint16(b[0:2]),
		Type: Type(b[2]),
		ID:   binary.BigEndian.Uint32(b[4:8]),
	}
	if h.Size < HeaderSize {
		return Header{}, &ProtocolError{Rule: fmt.Sprintf("frame size %d is smaller than the 16-byte header", h.Size)}
	}
	return h, nil
}

// PutHeader writes h into the first 16 bytes of b; the reserved bytes are zeroed.
func PutHeader(b []byte, h Header) {
	_ = b[HeaderSize-1]
	binary.BigEndian.PutUint16(b[0:2], h.Size)
	b[2] = byte(h.Type)
	b[3] = 0
	binary.BigEndian.PutUint32(b[4:8], h.ID)
	clear(b[8:16])
}

// Frame is one decoded frame. Payload and Raw alias the Reader's buffer.
type Frame struct {
	Header
	Payload []byte
	Raw     []byte // the whole frame, header included, as read
}

// Reader reads frames from an io.Reader into one reused buffer, which grows
// to the largest frame read (at most MaxFrameSize): a connection that only
// ever sees small frames holds a small buffer.
type Reader struct {
	r   io.Reader
	buf []byte
	f   Frame
}

// readerStart is a Reader's first buffer: most frames (a 1 KiB call) fit.
const readerStart = 4 << 10

// NewReader returns a Reader of r. Wrap r in a bufio.Reader to batch reads.
func NewReader(r io.Reader) *Reader { return &Reader{r: r} }

// Reset makes the Reader read from r, dropping nothing but its position.
func (r *Reader) Reset(rd io.Reader) { r.r = rd }

// ReadFrame reads the next frame. It returns io.EOF only when the stream ends
// cleanly between frames, and io.ErrUnexpectedEOF when it ends inside one.
// The returned frame is valid until the next call.
func (r *Reader) ReadFrame() (*Frame, error) {
	if r.buf == nil {
		r.buf = make([]byte, readerStart)
	}
	if _, err := io.ReadFull(r.r, r.buf[:HeaderSize]); err != nil {
		return nil, err
	}
	h, err := ParseHeader(r.buf[:HeaderSize])
	if err != nil {
		return nil, err
	}
	n := int(h.Size)
	if n > len(r.buf) {
		grown := make([]byte, min(max(n, 2*len(r.buf)), MaxFrameSize))
		copy(grown, r.buf[:HeaderSize])
		r.buf = grown
	}
	if _, err := io.ReadFull(r.r, r.buf[HeaderSize:n]); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	r.f = Frame{Header: h, Payload: r.buf[HeaderSize:n], Raw: r.buf[:n]}
	return &r.f, nil
}

// ProtocolError says which rule of the wire format a frame broke. A peer that
// sends one is answered with a fatal error frame and disconnected.
type ProtocolError struct {
	Rule string
}

func (e *ProtocolError) Error() string { return "tchannel protocol: " + e.Rule }

// IsProtocolError reports whether err is (or wraps) a *ProtocolError.
func IsProtocolError(err error) bool {
	var pe *ProtocolError
	return errors.As(err, &pe)
}

func errShort(what string, need, have int) error {
	return &ProtocolError{Rule: fmt.Sprintf("%s needs %d bytes, frame has %d", what, need, have)}
}

func errf(format string, args ...any) error {
	return &ProtocolError{Rule: fmt.Sprintf(format, args...)}
}
