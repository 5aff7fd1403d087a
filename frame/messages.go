package frame

import (
	"encoding/binary"
	"fmt"
	"maps"
	"slices"
)

// Version is the only protocol version, sent in init req and init res.
const Version = 2

// Init header keys. host_port and process_name are required.
const (
	InitHostPort        = "host_port"
	InitProcessName     = "process_name"
	InitLanguage        = "tchannel_language"
	InitLanguageVersion = "tchannel_language_version"
	InitTChannelVersion = "tchannel_version"
)

// EphemeralHostPort is the host_port of a peer that does not listen.
const EphemeralHostPort = "0.0.0.0:0"

// Init is the payload of init req and init res.
type Init struct {
	Version uint16
	Headers map[string]string
}

// AppendInit appends a whole init req or init res frame to dst.
func AppendInit(dst []byte, t Type, id uint32, m Init) ([]byte, error) {
	start := len(dst)
	dst = beginFrame(dst, t, id)
	dst = appendU16(dst, m.Version)
	dst = appendU16(dst, uint16(len(m.Headers)))
	for _, k := range slices.Sorted(maps.Keys(m.Headers)) {
		v := m.Headers[k]
		if len(k) > 0xFFFF || len(v) > 0xFFFF {
			return dst[:start], errf("init header %q is longer than 65535 bytes", k)
		}
		dst = appendU16(dst, uint16(len(k)))
		dst = append(dst, k...)
		dst = appendU16(dst, uint16(len(v)))
		dst = append(dst, v...)
	}
	return finishFrame(dst, start)
}

// MaxInitHeaders bounds the headers of an init message: TChannel peers send
// about six, and each costs the receiver memory for the connection's life.
// Their size is bounded by the frame's.
const MaxInitHeaders = 64

// ParseInit decodes an init req or init res payload. It checks the layout
// and MaxInitHeaders, not the version or the required keys: the connection
// layer answers those.
func ParseInit(payload []byte) (Init, error) {
	c := cursor{b: payload}
	m := Init{Version: c.u16("init version")}
	n := int(c.u16("init header count"))
	if c.err == nil && n > MaxInitHeaders {
		return Init{}, errf("init has %d headers, the limit is %d", n, MaxInitHeaders)
	}
	if c.err == nil && n > len(c.b)/4 {
		return Init{}, errf("init claims %d headers in %d bytes", n, len(c.b))
	}
	m.Headers = make(map[string]string, n)
	for i := 0; i < n && c.err == nil; i++ {
		k := c.bytes2("init header key")
		v := c.bytes2("init header value")
		if _, dup := m.Headers[string(k)]; dup && c.err == nil {
			return Init{}, errf("init header %q appears twice", k)
		}
		m.Headers[string(k)] = string(v)
	}
	if c.err != nil {
		return Init{}, c.err
	}
	if len(c.b) != 0 {
		return Init{}, errf("init has %d bytes after its headers", len(c.b))
	}
	return m, nil
}

// Flags of call frames.
const (
	FlagMoreFragments = 0x01
	FlagStreaming     = 0x02
)

// CallReq is the part of a call req frame before its args.
type CallReq struct {
	Flags    byte
	TTL      uint32 // milliseconds
	Tracing  Tracing
	Service  []byte
	Headers  Headers
	Checksum ChecksumType
}

// CallRes is the part of a call res frame before its args.
type CallRes struct {
	Flags    byte
	Code     ResCode
	Tracing  Tracing
	Headers  Headers
	Checksum ChecksumType
}

// ResCode is the code of a call res: OK or an application error.
type ResCode byte

// Call res codes.
const (
	ResOK       ResCode = 0x00
	ResAppError ResCode = 0x01
)

// Fragment is what every call frame carries after its message-specific
// fields: the checksum value and up to three arg chunks.
type Fragment struct {
	Flags     byte
	Checksum  ChecksumType
	Sum       uint32
	Chunks    [3][]byte
	NumChunks int
}

// More reports whether more frames of the message follow.
func (f *Fragment) More() bool { return f.Flags&FlagMoreFragments != 0 }

// DecodeCallReq decodes the first frame of a call request. It allocates
// nothing: m and f alias payload.
func DecodeCallReq(payload []byte, m *CallReq, f *Fragment) error {
	c := cursor{b: payload}
	m.Flags = c.u8("call req flags")
	m.TTL = c.u32("call req ttl")
	m.Tracing = c.tracing()
	m.Service = c.bytes1("call req service")
	return decodeRest(&c, m.Flags, &m.Headers, &m.Checksum, f)
}

// decodeRest decodes what the first frames of a call req and a call res
// share after their own fields: the transport headers, then the args.
func decodeRest(c *cursor, flags byte, h *Headers, cs *ChecksumType, f *Fragment) error {
	if c.err != nil {
		return c.err
	}
	var err error
	if *h, err = parseHeaders(c); err != nil {
		return err
	}
	if err := decodeFragment(c, flags, f); err != nil {
		return err
	}
	*cs = f.Checksum
	return nil
}

// CallReqArg1 returns arg1 (the method) of a call req's first frame, whose
// part before the args m was decoded from payload, without decoding the
// rest; nil when the frame does not hold the whole of it.
func CallReqArg1(payload []byte, m *CallReq) []byte { return callReqArg(payload, m, 0) }

// CallReqArg2 returns arg2 (the application headers) of a call req's first
// frame, as CallReqArg1 does arg1; nil when the frame does not hold the
// whole of it (arg2 goes on in the next frame).
func CallReqArg2(payload []byte, m *CallReq) []byte { return callReqArg(payload, m, 1) }

// callReqArg returns arg n (0-based, before arg3) of a first frame when the
// frame holds all of it: followed by more, or in the request's last frame.
func callReqArg(payload []byte, m *CallReq, n int) []byte {
	off := 1 + 4 + TracingSize + 1 + len(m.Service) + len(m.Headers)
	if off >= len(payload) {
		return nil
	}
	cs := ChecksumType(payload[off])
	if !cs.valid() {
		return nil
	}
	off += 1 + cs.Size()
	for arg := 0; ; arg++ {
		if off+2 > len(payload) {
			return nil
		}
		l := int(binary.BigEndian.Uint16(payload[off:]))
		off += 2
		if off+l > len(payload) {
			return nil
		}
		if arg == n {
			if n > 0 && off+l == len(payload) && m.Flags&FlagMoreFragments != 0 {
				return nil // it goes on in the next frame
			}
			return payload[off : off+l : off+l]
		}
		off += l
	}
}

// DecodeCallRes decodes the first frame of a call response.
func DecodeCallRes(payload []byte, m *CallRes, f *Fragment) error {
	c := cursor{b: payload}
	m.Flags = c.u8("call res flags")
	m.Code = ResCode(c.u8("call res code"))
	m.Tracing = c.tracing()
	return decodeRest(&c, m.Flags, &m.Headers, &m.Checksum, f)
}

// DecodeContinue decodes a call req continue or call res continue frame.
func DecodeContinue(payload []byte, f *Fragment) error {
	c := cursor{b: payload}
	flags := c.u8("continue flags")
	if c.err != nil {
		return c.err
	}
	return decodeFragment(&c, flags, f)
}

func decodeFragment(c *cursor, flags byte, f *Fragment) error {
	f.Flags = flags
	f.Checksum = ChecksumType(c.u8("checksum type"))
	if c.err != nil {
		return c.err
	}
	if !f.Checksum.valid() {
		return errf("unknown checksum type %d", f.Checksum)
	}
	f.Sum = 0
	if f.Checksum != ChecksumNone {
		f.Sum = c.u32("checksum")
	}
	f.NumChunks = 0
	for len(c.b) > 0 && c.err == nil {
		if f.NumChunks == 3 {
			return errf("a call frame carries more than 3 arg chunks")
		}
		f.Chunks[f.NumChunks] = c.bytes2("arg chunk")
		f.NumChunks++
	}
	return c.err
}

// Cancel is the payload of a cancel frame; Claim's is the same minus Why.
type Cancel struct {
	TTL     uint32
	Tracing Tracing
	Why     []byte
}

// AppendCancel appends a whole cancel frame for message id to dst.
func AppendCancel(dst []byte, id uint32, m Cancel) ([]byte, error) {
	start := len(dst)
	dst = beginFrame(dst, TypeCancel, id)
	dst = appendU32(dst, m.TTL)
	dst = m.Tracing.appendTo(dst)
	why := m.Why
	if len(why) > 0xFFFF {
		why = why[:0xFFFF]
	}
	dst = appendU16(dst, uint16(len(why)))
	dst = append(dst, why...)
	return finishFrame(dst, start)
}

// DecodeCancel decodes a cancel payload.
func DecodeCancel(payload []byte) (Cancel, error) {
	c := cursor{b: payload}
	m := Cancel{TTL: c.u32("cancel ttl"), Tracing: c.tracing()}
	m.Why = c.bytes2("cancel why")
	return m, c.err
}

// DecodeClaim decodes a claim payload.
func DecodeClaim(payload []byte) (ttl uint32, t Tracing, err error) {
	c := cursor{b: payload}
	ttl = c.u32("claim ttl")
	t = c.tracing()
	return ttl, t, c.err
}

// AppendPing appends an empty ping req or ping res frame to dst.
func AppendPing(dst []byte, t Type, id uint32) []byte {
	start := len(dst)
	dst = beginFrame(dst, t, id)
	dst, _ = finishFrame(dst, start)
	return dst
}

// ErrCode is the code of an error frame.
type ErrCode byte

// Error frame codes.
const (
	ErrCodeTimeout    ErrCode = 0x01
	ErrCodeCancelled  ErrCode = 0x02
	ErrCodeBusy       ErrCode = 0x03
	ErrCodeDeclined   ErrCode = 0x04
	ErrCodeUnexpected ErrCode = 0x05
	ErrCodeBadRequest ErrCode = 0x06
	ErrCodeNetwork    ErrCode = 0x07
	ErrCodeUnhealthy  ErrCode = 0x08
	ErrCodeProtocol   ErrCode = 0xFF
)

func (c ErrCode) String() string {
	switch c {
	case ErrCodeTimeout:
		return "timeout"
	case ErrCodeCancelled:
		return "cancelled"
	case ErrCodeBusy:
		return "busy"
	case ErrCodeDeclined:
		return "declined"
	case ErrCodeUnexpected:
		return "unexpected"
	case ErrCodeBadRequest:
		return "bad request"
	case ErrCodeNetwork:
		return "network"
	case ErrCodeUnhealthy:
		return "unhealthy"
	case ErrCodeProtocol:
		return "protocol"
	}
	return fmt.Sprintf("error code 0x%02x", byte(c))
}

// ErrorMsg is the payload of an error frame.
type ErrorMsg struct {
	Code    ErrCode
	Tracing Tracing
	Message []byte
}

// AppendError appends a whole error frame to dst. A message longer than the
// frame allows is cut, so an error can always be sent.
func AppendError(dst []byte, id uint32, m ErrorMsg) []byte {
	const room = MaxPayloadSize - 1 - TracingSize - 2
	start := len(dst)
	dst = beginFrame(dst, TypeError, id)
	dst = append(dst, byte(m.Code))
	dst = m.Tracing.appendTo(dst)
	msg := m.Message
	if len(msg) > room {
		msg = msg[:room]
	}
	dst = appendU16(dst, uint16(len(msg)))
	dst = append(dst, msg...)
	dst, _ = finishFrame(dst, start)
	return dst
}

// DecodeError decodes an error payload.
func DecodeError(payload []byte) (ErrorMsg, error) {
	c := cursor{b: payload}
	m := ErrorMsg{Code: ErrCode(c.u8("error code"))}
	m.Tracing = c.tracing()
	m.Message = c.bytes2("error message")
	if c.err == nil && m.Code == 0 {
		return m, errf("error frame with code 0x00")
	}
	return m, c.err
}

// beginFrame appends a header whose size is filled by finishFrame.
func beginFrame(dst []byte, t Type, id uint32) []byte {
	dst = append(dst, make([]byte, HeaderSize)...)
	PutHeader(dst[len(dst)-HeaderSize:], Header{Type: t, ID: id})
	return dst
}

func finishFrame(dst []byte, start int) ([]byte, error) {
	n := len(dst) - start
	if n > MaxFrameSize {
		return dst[:start], errf("frame of %d bytes exceeds the %d-byte limit", n, MaxFrameSize)
	}
	dst[start] = byte(n >> 8)
	dst[start+1] = byte(n)
	return dst, nil
}
