package grpcgate

import (
	"net"
	"os"
	"syscall"
)

// pipe returns the two ends of an in-memory stream connection: a Unix
// socket pair, so both ends are sockets the runtime's poller drives, with
// the kernel's buffer between them (net.Pipe has none: every write would
// wait for its read).
func pipe() (net.Conn, net.Conn, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, os.NewSyscallError("socketpair", err)
	}
	var ends [2]net.Conn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "grpcgate")
		ends[i], err = net.FileConn(f) // a dup: f is closed either way
		f.Close()
		if err != nil {
			if i == 1 {
				ends[0].Close()
			} else {
				syscall.Close(fds[1])
			}
			return nil, nil, err
		}
	}
	return ends[0], ends[1], nil
}
