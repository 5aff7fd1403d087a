package outbox

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
)

// Socket returns nc with its reads and writes made by sysRead and
// sysWrite, waiting in Go's poller only while the socket is empty or full;
// deadlines and Close work as on nc, and NetConn unwraps it. nc itself if
// it is not a TCP or Unix socket (a TLS connection is wrapped around a
// Socket instead).
func Socket(nc net.Conn) net.Conn {
	if _, done := nc.(*socket); done {
		return nc
	}
	raw := rawOf(nc)
	if raw == nil {
		return nc
	}
	s := &socket{Conn: nc, raw: raw}
	s.rd.fn, s.wr.fn = s.rd.read, s.wr.write
	return s
}

type socket struct {
	net.Conn
	raw    syscall.RawConn
	rmu    sync.Mutex // one Read at a time uses rd
	wmu    sync.Mutex // one Write at a time uses wr
	rd, wr sysCall
}

// sysCall is one Read's or Write's buffer and result, and the function
// RawConn calls, bound once (a closure per call cost an allocation).
type sysCall struct {
	p   []byte
	n   int
	err error
	fn  func(fd uintptr) bool
}

// read reads once; false (wait for the poller) while there is nothing.
func (c *sysCall) read(fd uintptr) bool {
	for {
		c.n, c.err = sysRead(fd, c.p)
		if c.err != syscall.EINTR {
			return c.err != syscall.EAGAIN
		}
	}
}

// write writes all of p, waiting for the poller while the socket is full.
func (c *sysCall) write(fd uintptr) bool {
	for c.n < len(c.p) {
		m, err := sysWrite(fd, c.p[c.n:])
		switch err {
		case nil:
			c.n += m
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			c.err = err
			return true
		}
	}
	return true
}

func (s *socket) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.rmu.Lock()
	defer s.rmu.Unlock()
	c := &s.rd
	c.p = p
	err := s.raw.Read(c.fn) // closed, or the deadline passed
	c.p = nil
	switch {
	case err != nil:
		return 0, err
	case c.err != nil:
		return 0, s.opError("read", c.err)
	case c.n == 0:
		return 0, io.EOF
	}
	return c.n, nil
}

func (s *socket) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	c := &s.wr
	c.p, c.n, c.err = p, 0, nil
	err := s.raw.Write(c.fn)
	c.p = nil
	if err == nil && c.err != nil {
		err = s.opError("write", c.err)
	}
	return c.n, err
}

func (s *socket) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: s.LocalAddr().Network(), Source: s.LocalAddr(), Addr: s.RemoteAddr(), Err: os.NewSyscallError(op, err)}
}

// NetConn is the socket under s.
func (s *socket) NetConn() net.Conn { return s.Conn }
