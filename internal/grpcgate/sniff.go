package grpcgate

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"time"
)

// preface is the start of the HTTP/2 client connection preface ("PRI *
// HTTP/2.0\r\n\r\nSM\r\n\r\n"). A TChannel connection starts with a frame
// header whose third byte is the frame type, 0x01 for init req: three bytes
// tell the two apart.
const preface = "PRI"

// IsHTTP2 reports whether the connection's first bytes are HTTP/2's client
// preface. It peeks (MSG_PEEK): nothing is consumed, so whichever protocol
// serves the connection reads it from its first byte. It waits until
// deadline for the bytes to come. A connection that is not a socket is
// taken for TChannel.
func IsHTTP2(nc net.Conn, deadline time.Time) (bool, error) {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return false, nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false, err
	}
	nc.SetReadDeadline(deadline)
	defer nc.SetReadDeadline(time.Time{})
	var buf [len(preface)]byte
	for {
		var n int
		var perr error
		err := rc.Read(func(fd uintptr) bool {
			n, _, perr = syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK)
			return perr != syscall.EAGAIN
		})
		switch {
		case err != nil:
			return false, err
		case perr != nil:
			return false, os.NewSyscallError("recvfrom", perr)
		case n == 0:
			return false, io.EOF
		case n < len(buf) && string(buf[:n]) == preface[:n]:
			// A preface cut short: its rest is on the way (the socket stays
			// readable, so wait a moment instead of spinning on it).
			if time.Now().After(deadline) {
				return false, errors.New("the connection's first bytes did not come in time")
			}
			time.Sleep(time.Millisecond)
			continue
		}
		return string(buf[:n]) == preface, nil
	}
}
