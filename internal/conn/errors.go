package conn

import (
	"context"
	"errors"

	"github.com/meshrpc/mesh/frame"
)

// ErrClosing is returned by calls started after Shutdown or Close.
var ErrClosing = &frame.Error{Code: frame.ErrCodeDeclined, Message: "connection is closing"}

// Why a connection ended, for errors.Is on the error of Server, Dial and
// OnClose, so that meshd can count closures by cause.
var (
	// ErrHandshakeTimeout: the peer did not finish the init exchange in
	// Options.HandshakeTimeout.
	ErrHandshakeTimeout = errors.New("the init handshake did not finish in time")
	// ErrIdle: the peer sent nothing for Options.IdleTimeout and did not
	// answer a ping.
	ErrIdle = errors.New("idle, and no answer to a ping")
)

// causeError is a wire error that also matches a cause with errors.Is:
// a call's Timeout that is context.DeadlineExceeded, a handshake's network
// error that is ErrHandshakeTimeout.
type causeError struct {
	wire  *frame.Error
	cause error
}

func (e causeError) Error() string   { return e.wire.Error() }
func (e causeError) Unwrap() []error { return []error{e.wire, e.cause} }

// deadlineError is the Timeout of a call whose context's deadline passed: it
// is both a *frame.Error (errors.As) and context.DeadlineExceeded (errors.Is).
func deadlineError(wire *frame.Error) error { return causeError{wire, context.DeadlineExceeded} }
