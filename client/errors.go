package client

import (
	"fmt"

	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/conn"
)

// Error is a call that failed with a TChannel error code, sent by the peer
// or raised locally (deadline: frame.ErrCodeTimeout, lost connection:
// frame.ErrCodeNetwork). Match it with errors.As. A Handler may return one to
// answer with that code.
type Error = conn.Error

// Errorf returns an *Error with the given code, for handlers to return.
func Errorf(code frame.ErrCode, format string, args ...any) *Error {
	return conn.Errorf(code, format, args...)
}

// CodeOf returns the wire error code of err, frame.ErrCodeUnexpected for
// errors without one.
func CodeOf(err error) frame.ErrCode { return conn.CodeOf(err) }

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
