package grpcgate

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// The frames meshd's HTTP/2 side writes, appended to a batch (RFC 9113).

func appendFrameHeader(b []byte, length int, t http2.FrameType, flags http2.Flags, id uint32) []byte {
	return append(b, byte(length>>16), byte(length>>8), byte(length), byte(t), byte(flags),
		byte(id>>24)&0x7f, byte(id>>16), byte(id>>8), byte(id))
}

func appendSettings(b []byte, settings ...http2.Setting) []byte {
	b = appendFrameHeader(b, 6*len(settings), http2.FrameSettings, 0, 0)
	for _, s := range settings {
		b = binary.BigEndian.AppendUint16(b, uint16(s.ID))
		b = binary.BigEndian.AppendUint32(b, s.Val)
	}
	return b
}

func appendWindowUpdate(b []byte, id, n uint32) []byte {
	return binary.BigEndian.AppendUint32(appendFrameHeader(b, 4, http2.FrameWindowUpdate, 0, id), n)
}

func appendRSTStream(b []byte, id uint32, code http2.ErrCode) []byte {
	return binary.BigEndian.AppendUint32(appendFrameHeader(b, 4, http2.FrameRSTStream, 0, id), uint32(code))
}

func appendSettingsAck(b []byte) []byte {
	return appendFrameHeader(b, 0, http2.FrameSettings, http2.FlagSettingsAck, 0)
}

func appendPingAck(b []byte, data [8]byte) []byte {
	return append(appendFrameHeader(b, 8, http2.FramePing, http2.FlagPingAck, 0), data[:]...)
}

// appendGoAway says the connection ends: streams past lastID were not
// taken; debug says why.
func appendGoAway(b []byte, lastID uint32, code http2.ErrCode, debug string) []byte {
	b = appendFrameHeader(b, 8+len(debug), http2.FrameGoAway, 0, 0)
	b = binary.BigEndian.AppendUint32(b, lastID)
	b = binary.BigEndian.AppendUint32(b, uint32(code))
	return append(b, debug...)
}

// appendData writes data in frames of at most maxFrame bytes.
func appendData(b []byte, id uint32, maxFrame int, head, data []byte, end bool) []byte {
	for len(head)+len(data) > 0 {
		n := min(len(head)+len(data), maxFrame)
		var flags http2.Flags
		if n == len(head)+len(data) && end {
			flags = http2.FlagDataEndStream
		}
		b = appendFrameHeader(b, n, http2.FrameData, flags, id)
		h := min(n, len(head))
		b = append(append(b, head[:h]...), data[:n-h]...)
		head, data = head[h:], data[n-h:]
	}
	return b
}

// encoder is an HPACK encoder that never adds to its dynamic table (its
// size is 0), so the header blocks it writes decode in any order: answers
// are encoded on their own goroutines, with no lock over the connection.
type encoder struct {
	buf bytes.Buffer
	enc *hpack.Encoder
}

var encoders = sync.Pool{New: func() any { return newEncoder() }}

func newEncoder() *encoder {
	e := &encoder{}
	e.enc = hpack.NewEncoder(&e.buf)
	e.enc.SetMaxDynamicTableSize(0)
	// The size update that says so is written at the start of the next
	// block: written now and dropped, so that a block that starts with a
	// constant field (below) never gets it in its middle. The peer's table
	// is never used, whatever its size.
	e.enc.WriteField(status200)
	e.buf.Reset()
	return e
}

// constFields are fields of almost every header block meshd writes, each
// encoded once: an encoder without a dynamic table writes a field the
// same way every time, and encoding them anew (a static table search and
// Huffman coding) was a third of the cost of the header blocks.
var constFields = func() map[hpack.HeaderField][]byte {
	m := make(map[hpack.HeaderField][]byte)
	e := newEncoder()
	for _, f := range []hpack.HeaderField{status200, contentType, statusOKField, methodPOST, schemeHTTP, teTrailers, userAgent} {
		e.enc.WriteField(f)
		m[f] = bytes.Clone(e.buf.Bytes())
		e.buf.Reset()
	}
	return m
}()

// appendHeaders writes a header block as HEADERS and, past maxFrame bytes,
// CONTINUATION frames.
func appendHeaders(b []byte, id uint32, maxFrame int, end bool, fields []hpack.HeaderField) []byte {
	e := encoders.Get().(*encoder)
	defer encoders.Put(e)
	e.buf.Reset()
	for _, f := range fields {
		if b, ok := constFields[f]; ok {
			e.buf.Write(b)
		} else {
			e.enc.WriteField(f)
		}
	}
	block := e.buf.Bytes()
	t := http2.FrameHeaders
	var flags http2.Flags
	if end {
		flags = http2.FlagHeadersEndStream
	}
	for {
		n := min(len(block), maxFrame)
		if n == len(block) {
			flags |= http2.FlagHeadersEndHeaders
		}
		b = append(appendFrameHeader(b, n, t, flags, id), block[:n]...)
		if block = block[n:]; len(block) == 0 {
			return b
		}
		t, flags = http2.FrameContinuation, 0
	}
}

var (
	status200   = hpack.HeaderField{Name: ":status", Value: "200"}
	contentType = hpack.HeaderField{Name: "content-type", Value: "application/grpc"}
	methodPOST  = hpack.HeaderField{Name: ":method", Value: "POST"}
	schemeHTTP  = hpack.HeaderField{Name: ":scheme", Value: "http"}
	teTrailers  = hpack.HeaderField{Name: "te", Value: "trailers"}
	userAgent   = hpack.HeaderField{Name: "user-agent", Value: "meshd"}
)

// responseHeaders is the header block of an answer.
func responseHeaders(md meta) []hpack.HeaderField {
	return md.appendFields(append(make([]hpack.HeaderField, 0, 2+len(md)), status200, contentType))
}

// trailerFields is the trailer block of an answer: its status, then md.
func trailerFields(md meta, s *status.Status) []hpack.HeaderField {
	f := make([]hpack.HeaderField, 1, 3+len(md))
	f[0] = grpcStatus(s.Code())
	if m := s.Message(); m != "" {
		f = append(f, hpack.HeaderField{Name: "grpc-message", Value: percentEncode(m)})
	}
	if s.Code() == codes.OK {
		return md.appendFields(f) // no details to look for (Proto copies the status)
	}
	if p := s.Proto(); len(p.Details) > 0 {
		if b, err := proto.Marshal(p); err == nil {
			f = append(f, hpack.HeaderField{Name: "grpc-status-details-bin", Value: base64.RawStdEncoding.EncodeToString(b)})
		}
	}
	return md.appendFields(f)
}

// grpcStatus is the grpc-status field of a code (OK's, every answer's,
// without a conversion).
func grpcStatus(c codes.Code) hpack.HeaderField {
	if c == codes.OK {
		return statusOKField
	}
	return hpack.HeaderField{Name: "grpc-status", Value: strconv.Itoa(int(c))}
}

var statusOKField = hpack.HeaderField{Name: "grpc-status", Value: "0"}

// appendTrailersOnly writes the one block of an answer with no message: a
// failed call's.
func appendTrailersOnly(b []byte, id uint32, maxFrame int, header, trailer meta, s *status.Status) []byte {
	f := append([]hpack.HeaderField{status200, contentType}, trailerFields(trailer, s)...)
	return appendHeaders(b, id, maxFrame, true, header.appendFields(f))
}

// decodeBin reads a binary header's value: base64, padded or not.
func decodeBin(v string) ([]byte, error) {
	if len(v)%4 == 0 {
		return base64.StdEncoding.DecodeString(v)
	}
	return base64.RawStdEncoding.DecodeString(v)
}

// isGRPCContentType reports whether a request's content type is gRPC's:
// application/grpc, alone or with a subtype (+proto, ;charset...).
func isGRPCContentType(ct string) bool {
	rest, ok := strings.CutPrefix(ct, "application/grpc")
	return ok && (rest == "" || rest[0] == '+' || rest[0] == ';')
}

// timeoutUnit is one of grpc-timeout's units and its letter.
type timeoutUnit struct {
	unit time.Duration
	c    byte
}

// timeoutUnits are grpc-timeout's units, finest first.
var timeoutUnits = [...]timeoutUnit{{time.Nanosecond, 'n'}, {time.Microsecond, 'u'}, {time.Millisecond, 'm'}, {time.Second, 'S'}, {time.Minute, 'M'}, {time.Hour, 'H'}}

// parseTimeout reads grpc-timeout: at most 8 digits and a unit.
func parseTimeout(s string) (time.Duration, bool) {
	if len(s) < 2 || len(s) > 9 {
		return 0, false
	}
	i := slices.IndexFunc(timeoutUnits[:], func(u timeoutUnit) bool { return u.c == s[len(s)-1] })
	if i < 0 {
		return 0, false
	}
	unit := timeoutUnits[i].unit
	n, err := strconv.ParseUint(s[:len(s)-1], 10, 64)
	if err != nil {
		return 0, false
	}
	if d := time.Duration(n) * unit; d/unit == time.Duration(n) && d > 0 {
		return d, true
	}
	if n == 0 {
		return time.Nanosecond, true // already due
	}
	return 1<<63 - 1, true
}

// encodeTimeout writes grpc-timeout: at most 8 digits, in the finest unit
// that holds them, rounded up: a deadline is never sent shorter.
func encodeTimeout(d time.Duration) string {
	if d <= 0 {
		return "1n"
	}
	for _, u := range timeoutUnits {
		n := d / u.unit
		if d%u.unit != 0 {
			n++
		}
		if n <= 99999999 || u.c == 'H' {
			return strconv.FormatInt(int64(min(n, 99999999)), 10) + string(u.c)
		}
	}
	panic("unreachable")
}

// percentEncode writes grpc-message as gRPC asks: bytes outside printable
// ASCII, and '%', as %XX.
func percentEncode(s string) string {
	i := 0
	for i < len(s) && s[i] >= 0x20 && s[i] <= 0x7e && s[i] != '%' {
		i++
	}
	if i == len(s) {
		return s
	}
	const hex = "0123456789ABCDEF"
	b := []byte(s[:i])
	for ; i < len(s); i++ {
		if c := s[i]; c >= 0x20 && c <= 0x7e && c != '%' {
			b = append(b, c)
		} else {
			b = append(b, '%', hex[c>>4], hex[c&15])
		}
	}
	return string(b)
}
