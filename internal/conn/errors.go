package conn

import (
	"context"

	"github.com/meshrpc/mesh/frame"
)

// ErrClosing is returned by calls started after Shutdown or Close.
var ErrClosing = &frame.Error{Code: frame.ErrCodeDeclined, Message: "connection is closing"}

// deadlineError is the Timeout of a call whose context's deadline passed:
// it is both a *frame.Error (errors.As) and context.DeadlineExceeded
// (errors.Is), so callers can test it either way.
type deadlineError struct{ wire *frame.Error }

func (e deadlineError) Error() string   { return e.wire.Error() }
func (e deadlineError) Unwrap() []error { return []error{e.wire, context.DeadlineExceeded} }
