package conn

import (
	"context"
	"io"
	"time"

	"github.com/meshrpc/mesh/frame"
)

// Request is a call: sent with Conn.Call, or received by a Handler.
type Request struct {
	Service  string
	Method   string        // arg1
	Headers  frame.Headers // transport headers (as, cn, sk, ...)
	Tracing  frame.Tracing
	Checksum frame.ChecksumType
	Arg2     []byte // application headers, in the arg scheme's format
	Arg3     []byte // body

	// Body streams arg3. On a sent request, if set, arg3 is read from it
	// instead of Arg3. On a received request it is set, and Arg3 is nil, when
	// arg3 passed 256 KiB while still arriving: read it before or while
	// answering (ReadBody reads it whole).
	Body io.Reader

	// StreamResponse makes Call return as soon as the response's arg2 has
	// arrived, with its arg3 readable from Response.Body as it comes.
	StreamResponse bool

	// TTL is, on a received request, the time the caller allowed.
	TTL time.Duration
}

// Response is a call's answer. Code ResAppError marks an application error
// whose details are in the args.
type Response struct {
	Code     frame.ResCode
	Headers  frame.Headers
	Tracing  frame.Tracing
	Checksum frame.ChecksumType
	Arg2     []byte
	Arg3     []byte

	// Body streams arg3. A Handler may set it instead of Arg3. A streamed
	// response (Request.StreamResponse) has it set to an io.ReadCloser: read
	// it to EOF or close it.
	Body io.Reader
}

// Handler serves one call the peer sent. The context ends when the call's TTL
// runs out, the caller cancels, or the connection closes; an answer returned
// after that is dropped. An error that is (or wraps) a *frame.Error is sent with
// its code; any other error as ErrCodeUnexpected.
type Handler func(ctx context.Context, req *Request) (*Response, error)

// ReadBody returns arg3 whole, reading Body when arg3 was streamed, and
// fails with a bad-request error past limit bytes.
func (r *Request) ReadBody(limit int) ([]byte, error) {
	if r.Body == nil {
		return r.Arg3, nil
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, int64(limit)+1))
	if err != nil {
		return nil, err
	}
	if len(b) > limit {
		return nil, frame.Errorf(frame.ErrCodeBadRequest, "request body exceeds %d bytes", limit)
	}
	r.Arg3, r.Body = b, nil
	return b, nil
}
