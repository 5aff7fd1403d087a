package client

import (
	"errors"
	"fmt"

	"github.com/meshrpc/mesh/frame"
)

// Error is a call that failed with a TChannel error code: frame.Error, the
// one wire-error type of every layer of mesh, with two fields:
//
//	Code    frame.ErrCode // Timeout, Cancelled, Busy, Declined, Unexpected, BadRequest, Network, ...
//	Message string        // the peer's (or the local cause's) words
//
// It is sent by the peer or raised locally (a passed deadline is
// frame.ErrCodeTimeout and also matches errors.Is(err,
// context.DeadlineExceeded); a lost connection is frame.ErrCodeNetwork; a
// call no instance can take is Declined or Busy). Match it with errors.As,
// or read the code with frame.CodeOf(err). A Handler may return one to
// answer with that code.
type Error = frame.Error

// Errorf returns an *Error with the given code, for handlers to return.
func Errorf(code frame.ErrCode, format string, args ...any) *Error {
	return frame.Errorf(code, format, args...)
}

// ErrEncoding marks (errors.Is) a failure to encode a call's arguments or to
// decode its answer in this process. It is not an *Error: nothing failed on
// the wire, and when an answer does not decode the call itself succeeded.
var ErrEncoding = errors.New("encoding")

// ErrNothingToAdvertise is Advertise's error for a Server with no handler.
var ErrNothingToAdvertise = errors.New("nothing to advertise: register a handler first (Server.Register)")

// ApplicationError is a failure answered by the called handler itself: a
// call res with the application-error code. Headers and Body are the answer's
// arg2 and arg3; Message is filled for the JSON scheme's {"type":"error"} body.
type ApplicationError struct {
	Headers []byte
	Body    []byte
	Message string
}

func (e *ApplicationError) Error() string {
	if e.Message != "" {
		return "application error: " + e.Message
	}
	return fmt.Sprintf("application error (%d-byte body)", len(e.Body))
}
