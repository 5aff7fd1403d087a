package grpcgate

import (
	"google.golang.org/grpc/codes"

	"github.com/meshrpc/mesh/frame"
)

// codeOf is the gRPC status of a TChannel error (YARPC's mapping).
func codeOf(c frame.ErrCode) codes.Code {
	switch c {
	case frame.ErrCodeTimeout:
		return codes.DeadlineExceeded
	case frame.ErrCodeCancelled:
		return codes.Canceled
	case frame.ErrCodeBusy:
		return codes.ResourceExhausted
	case frame.ErrCodeDeclined, frame.ErrCodeNetwork, frame.ErrCodeUnhealthy:
		return codes.Unavailable
	case frame.ErrCodeBadRequest:
		return codes.InvalidArgument
	}
	return codes.Internal // Unexpected, Protocol and codes no one defined
}

// errCodeOf is the TChannel error a gRPC status travels as, and false for
// the statuses that have none: those travel as application errors carrying
// their code (headerErrorCode), so every status comes back as it left.
func errCodeOf(c codes.Code) (frame.ErrCode, bool) {
	switch c {
	case codes.DeadlineExceeded:
		return frame.ErrCodeTimeout, true
	case codes.Canceled:
		return frame.ErrCodeCancelled, true
	case codes.ResourceExhausted:
		return frame.ErrCodeBusy, true
	case codes.Unavailable:
		return frame.ErrCodeDeclined, true
	case codes.InvalidArgument:
		return frame.ErrCodeBadRequest, true
	case codes.Internal:
		return frame.ErrCodeUnexpected, true
	}
	return 0, false
}
