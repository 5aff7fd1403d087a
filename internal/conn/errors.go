package conn

import (
	"errors"
	"fmt"

	"github.com/meshrpc/mesh/frame"
)

// Error is a call that failed with a wire error code: received in an error
// frame, or raised locally with the code the wire would use (a caller's
// deadline is ErrCodeTimeout, a lost connection ErrCodeNetwork).
type Error struct {
	Code    frame.ErrCode
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("tchannel %s: %s", e.Code, e.Message) }

// Errorf returns an *Error with code and a formatted message.
func Errorf(code frame.ErrCode, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// CodeOf returns the wire code of err, or ErrCodeUnexpected for errors that
// carry none.
func CodeOf(err error) frame.ErrCode {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return frame.ErrCodeUnexpected
}

// ErrClosing is returned by calls started after Shutdown or Close.
var ErrClosing = &Error{Code: frame.ErrCodeDeclined, Message: "connection is closing"}
