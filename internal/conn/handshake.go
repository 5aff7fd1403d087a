package conn

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"time"

	"github.com/meshrpc/mesh/frame"
)

// The init handshake: each side sends its init message, checks the
// other's, and records who the peer is.

func (c *Conn) initHeaders() map[string]string {
	h := map[string]string{
		frame.InitHostPort:        c.opts.HostPort,
		frame.InitProcessName:     c.opts.ProcessName,
		frame.InitLanguage:        "go",
		frame.InitLanguageVersion: runtime.Version(),
		frame.InitTChannelVersion: "mesh",
	}
	for k, v := range c.opts.InitHeaders {
		h[k] = v
	}
	return h
}

func (c *Conn) handshakeClient() error {
	c.nc.SetDeadline(time.Now().Add(c.opts.HandshakeTimeout))
	defer c.nc.SetDeadline(time.Time{})
	b, err := frame.AppendInit(nil, frame.TypeInitReq, c.nextID.Add(1), frame.Init{Version: frame.Version, Headers: c.initHeaders()})
	if err != nil {
		return err
	}
	if _, err := c.nc.Write(b); err != nil {
		return &frame.Error{Code: frame.ErrCodeNetwork, Message: "handshake: " + err.Error()}
	}
	f, err := frame.NewReader(c.nc).ReadFrame()
	if err != nil {
		return handshakeError(err)
	}
	switch f.Type {
	case frame.TypeInitRes:
	case frame.TypeError:
		m, _ := frame.DecodeError(f.Payload)
		return &frame.Error{Code: m.Code, Message: "handshake refused: " + string(m.Message)}
	default:
		return c.refuse(f.ID, fmt.Sprintf("expected init res, got %s", f.Type))
	}
	return c.acceptInit(f)
}

func (c *Conn) handshakeServer() error {
	c.nc.SetDeadline(time.Now().Add(c.opts.HandshakeTimeout))
	defer c.nc.SetDeadline(time.Time{})
	f, err := frame.NewReader(c.nc).ReadFrame()
	if err != nil {
		if frame.IsProtocolError(err) {
			return c.refuse(frame.ConnErrorID, err.Error())
		}
		return handshakeError(err)
	}
	if f.Type != frame.TypeInitReq {
		return c.refuse(f.ID, fmt.Sprintf("expected init req, got %s", f.Type))
	}
	id := f.ID
	if err := c.acceptInit(f); err != nil {
		return err
	}
	b, _ := frame.AppendInit(nil, frame.TypeInitRes, id, frame.Init{Version: frame.Version, Headers: c.initHeaders()})
	if _, err := c.nc.Write(b); err != nil {
		return &frame.Error{Code: frame.ErrCodeNetwork, Message: "handshake: " + err.Error()}
	}
	return nil
}

// acceptInit checks the peer's init message and records who it is.
func (c *Conn) acceptInit(f *frame.Frame) error {
	m, err := frame.ParseInit(f.Payload)
	if err != nil {
		return c.refuse(f.ID, err.Error())
	}
	if m.Version != frame.Version {
		return c.refuse(f.ID, fmt.Sprintf("unsupported protocol version %d, want %d", m.Version, frame.Version))
	}
	for _, k := range []string{frame.InitHostPort, frame.InitProcessName} {
		if _, ok := m.Headers[k]; !ok {
			return c.refuse(f.ID, fmt.Sprintf("init is missing the required %q header", k))
		}
	}
	c.peer = Peer{HostPort: m.Headers[frame.InitHostPort], ProcessName: m.Headers[frame.InitProcessName], Headers: m.Headers}
	return nil
}

// handshakeError is the network error of a failed init read; past the
// deadline it is also ErrHandshakeTimeout.
func handshakeError(err error) error {
	wire := &frame.Error{Code: frame.ErrCodeNetwork, Message: "handshake: " + err.Error()}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return causeError{wire, ErrHandshakeTimeout}
	}
	return wire
}

// refuse sends a fatal protocol error during the handshake and fails it.
func (c *Conn) refuse(id uint32, why string) error {
	c.nc.Write(frame.AppendError(nil, id, frame.ErrorMsg{Code: frame.ErrCodeProtocol, Message: []byte(why)}))
	c.nc.Close()
	return &frame.Error{Code: frame.ErrCodeProtocol, Message: "handshake: " + why}
}
