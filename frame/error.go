package frame

import (
	"errors"
	"fmt"
)

// Error is a call that failed with a wire error code: received in an error
// frame, or raised locally with the code the wire would use (a caller's
// deadline is ErrCodeTimeout, a lost connection ErrCodeNetwork, a routing
// stage's refusal Busy or Declined). It is the one error type of every
// layer of mesh, so errors.As(err, &e) works the same everywhere.
type Error struct {
	Code    ErrCode
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("tchannel %s: %s", e.Code, e.Message) }

// Errorf returns an *Error with code and a formatted message.
func Errorf(code ErrCode, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// CodeOf returns the wire code of err, or ErrCodeUnexpected for errors that
// carry none.
func CodeOf(err error) ErrCode {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ErrCodeUnexpected
}
