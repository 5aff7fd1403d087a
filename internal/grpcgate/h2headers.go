package grpcgate

import (
	"errors"
	"fmt"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// headerBlock is one decoded header block (a HEADERS frame and its
// CONTINUATIONs). Its fields are reused by the next block read.
type headerBlock struct {
	streamID  uint32
	ended     bool // the frame ended its stream
	truncated bool // past the header list limit: fields hold what came first
	fields    []hpack.HeaderField
}

// regular is the block's fields that are not pseudo-headers (which come
// first: headerReader checks that).
func (b *headerBlock) regular() []hpack.HeaderField {
	for i, f := range b.fields {
		if !f.IsPseudo() {
			return b.fields[i:]
		}
	}
	return nil
}

// pseudo is the value of the pseudo-header ":"+name, "" if none.
func (b *headerBlock) pseudo(name string) string {
	for _, f := range b.fields {
		if !f.IsPseudo() {
			break
		}
		if f.Name[1:] == name {
			return f.Value
		}
	}
	return ""
}

// headerReader decodes a connection's header blocks with one HPACK decoder
// (the peer's dynamic table) into one list of fields, reused: x/net's
// ReadMetaHeaders made a frame, a list and several closures per block,
// three blocks a call. It checks what that checks: the header list limit,
// field names and values, pseudo-headers first, known and not repeated.
type headerReader struct {
	fr      *http2.Framer
	dec     *hpack.Decoder
	max     uint32 // the header list limit
	block   headerBlock
	remain  uint32 // of max, in the block being read
	regular bool   // a regular field came
	invalid error  // why the block is malformed
}

func newHeaderReader(fr *http2.Framer, max uint32) *headerReader {
	r := &headerReader{fr: fr, max: max}
	r.dec = hpack.NewDecoder(4096, r.emit)
	r.dec.SetMaxStringLength(int(max))
	return r
}

func (r *headerReader) emit(f hpack.HeaderField) {
	switch {
	case !httpguts.ValidHeaderFieldValue(f.Value):
		r.invalid = fmt.Errorf("invalid value of header %q", f.Name)
	case f.IsPseudo() && r.regular:
		r.invalid = errors.New("a pseudo-header after a regular header")
	case !f.IsPseudo():
		r.regular = true
		if !validFieldName(f.Name) {
			r.invalid = fmt.Errorf("invalid header name %q", f.Name)
		}
	}
	if r.invalid != nil {
		r.dec.SetEmitEnabled(false)
		return
	}
	size := f.Size()
	if size > r.remain {
		r.dec.SetEmitEnabled(false)
		r.block.truncated = true
		r.remain = 0
		return
	}
	r.remain -= size
	r.block.fields = append(r.block.fields, f)
}

// read decodes the block hf begins, reading its CONTINUATION frames. A
// malformed block is a StreamError (the stream is reset); one that breaks
// the HPACK state, or runs far past the limit, a ConnectionError.
func (r *headerReader) read(hf *http2.HeadersFrame) (*headerBlock, error) {
	b := &r.block
	clear(b.fields) // drop the last block's strings
	b.streamID, b.ended, b.truncated, b.fields = hf.StreamID, hf.StreamEnded(), false, b.fields[:0]
	r.remain, r.regular, r.invalid = r.max, false, nil
	r.dec.SetEmitEnabled(true)
	frag, ended := hf.HeaderBlockFragment(), hf.HeadersEnded()
	for first := true; ; first = false {
		// Far past the limit (or any fragment once past it, or after a
		// malformed field): not worth decoding, the connection ends.
		if int64(len(frag)) > 4*int64(r.remain) || (r.invalid != nil && !first) {
			return nil, http2.ConnectionError(http2.ErrCodeProtocol)
		}
		if _, err := r.dec.Write(frag); err != nil {
			return nil, http2.ConnectionError(http2.ErrCodeCompression)
		}
		if ended {
			break
		}
		f, err := r.fr.ReadFrame()
		if err != nil {
			return nil, err
		}
		cf, ok := f.(*http2.ContinuationFrame) // the framer checks the order
		if !ok {
			return nil, http2.ConnectionError(http2.ErrCodeProtocol)
		}
		frag, ended = cf.HeaderBlockFragment(), cf.HeadersEnded()
	}
	if err := r.dec.Close(); err != nil {
		return nil, http2.ConnectionError(http2.ErrCodeCompression)
	}
	if r.invalid == nil {
		r.invalid = checkPseudo(b.fields)
	}
	if r.invalid != nil {
		return nil, http2.StreamError{StreamID: b.streamID, Code: http2.ErrCodeProtocol, Cause: r.invalid}
	}
	return b, nil
}

// checkPseudo checks a block's pseudo-headers: known, each once, of a
// request or of a response, not both.
func checkPseudo(fields []hpack.HeaderField) error {
	var request, response bool
	for i, f := range fields {
		if !f.IsPseudo() {
			break
		}
		switch f.Name {
		case ":method", ":path", ":scheme", ":authority", ":protocol":
			request = true
		case ":status":
			response = true
		default:
			return fmt.Errorf("unknown pseudo-header %q", f.Name)
		}
		for _, g := range fields[:i] {
			if g.Name == f.Name {
				return fmt.Errorf("pseudo-header %q twice", f.Name)
			}
		}
	}
	if request && response {
		return errors.New("request and response pseudo-headers in one block")
	}
	return nil
}

// validFieldName reports whether a regular header's name is an HTTP token
// in lower case, as HTTP/2 wants.
func validFieldName(name string) bool {
	if name == "" {
		return false
	}
	for _, c := range name {
		if !httpguts.IsTokenRune(c) || 'A' <= c && c <= 'Z' {
			return false
		}
	}
	return true
}

// streamErrorOf is err's stream error, if it is one: a frame that broke
// one stream, not the connection. (Checked per frame: no allocation for
// a nil err, which errors.As's target would cost.)
func streamErrorOf(err error) (http2.StreamError, bool) {
	if err == nil {
		return http2.StreamError{}, false
	}
	var se http2.StreamError
	ok := errors.As(err, &se)
	return se, ok
}
