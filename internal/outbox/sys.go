package outbox

import (
	"io"
	"net"
	"sync"
	"syscall"
)

// Socket returns nc with its reads and writes made by sysRead and
// sysWrite, waiting in Go's poller only while the socket is empty or full;
// deadlines, Close and SyscallConn work as on nc, and NetConn unwraps it.
// nc itself if it is not a TCP or Unix socket, or is a Socket already.
// Wrap a socket once, where it is accepted or dialed: TLS goes on top.
func Socket(nc net.Conn) net.Conn {
	if _, done := nc.(*socket); done {
		return nc
	}
	raw := rawOf(nc)
	if raw == nil {
		return nc
	}
	s := &socket{Conn: nc}
	s.rd.raw, s.wr.raw, s.wr.wait = raw, raw, true
	return s
}

type socket struct {
	net.Conn
	rmu    sync.Mutex // one Read at a time uses rd
	wmu    sync.Mutex // one Write at a time uses wr
	rd, wr sysCall
}

func (s *socket) Read(p []byte) (int, error) {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	return s.rd.read(p)
}

func (s *socket) Write(p []byte) (int, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.wr.write(p)
}

// NetConn is the socket under s.
func (s *socket) NetConn() net.Conn { return s.Conn }

// SyscallConn is the socket's RawConn, as on a net.TCPConn or UnixConn.
func (s *socket) SyscallConn() (syscall.RawConn, error) { return s.rd.raw, nil }

// sysCall reads or writes one socket through its RawConn with sysRead and
// sysWrite, one call at a time: the buffer and result of the one in
// progress, and the functions RawConn calls, bound once (a closure per
// call cost an allocation). A Socket's reads and writes, a Reading's, and
// the Writer's that never wait (Kick) are all made by one.
type sysCall struct {
	raw  syscall.RawConn
	wait bool   // a write waits while the socket is full; else it stops there (n < len(p), no error)
	idle func() // if set, runs when a read finds the socket empty, before it waits

	p                 []byte
	n                 int
	err               error
	readNow, writeNow func(fd uintptr) bool
}

// read reads once into p, waiting in the poller while the socket is
// empty; io.EOF when the peer closed.
func (c *sysCall) read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if c.readNow == nil {
		c.readNow = c.readFd
	}
	c.p = p
	err := c.raw.Read(c.readNow) // closed, or the deadline passed
	c.p = nil
	switch {
	case err != nil:
		return 0, err
	case c.err != nil:
		return 0, &net.OpError{Op: "read", Err: c.err}
	case c.n == 0:
		return 0, io.EOF
	}
	return c.n, nil
}

// write writes p, or, unless c.wait, what the socket takes now.
func (c *sysCall) write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if c.writeNow == nil {
		c.writeNow = c.writeFd
	}
	c.p, c.n, c.err = p, 0, nil
	err := c.raw.Write(c.writeNow)
	c.p = nil
	if err == nil && c.err != nil {
		err = &net.OpError{Op: "write", Err: c.err}
	}
	return c.n, err
}

// readFd is what RawConn.Read calls: one read; false (wait for the
// poller) while there is nothing to read.
func (c *sysCall) readFd(fd uintptr) bool {
	for {
		c.n, c.err = sysRead(fd, c.p)
		switch c.err {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			if c.idle != nil {
				c.idle()
			}
			return false
		}
		return true
	}
}

// writeFd is what RawConn.Write calls: writes until p is gone; on a full
// socket false (wait for the poller) if c.wait, else done.
func (c *sysCall) writeFd(fd uintptr) bool {
	for c.n < len(c.p) {
		m, err := sysWrite(fd, c.p[c.n:])
		switch err {
		case nil:
			c.n += m
		case syscall.EINTR:
		case syscall.EAGAIN:
			return !c.wait
		default:
			c.err = err
			return true
		}
	}
	return true
}
