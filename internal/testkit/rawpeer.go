package testkit

import (
	"bytes"
	"net"
	"testing"
	"time"

	"github.com/meshrpc/mesh/frame"
)

// RawPeer is a TChannel peer that sends whatever frames a test makes, to
// play a buggy or hostile program against a real server.
type RawPeer struct {
	net.Conn
	r *frame.Reader
}

// DialRaw connects to addr and completes the init handshake, sending
// headers besides host_port and process_name.
func DialRaw(t testing.TB, addr string, headers map[string]string) *RawPeer {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	h := map[string]string{frame.InitHostPort: frame.EphemeralHostPort, frame.InitProcessName: "raw-peer"}
	for k, v := range headers {
		h[k] = v
	}
	b, err := frame.AppendInit(nil, frame.TypeInitReq, 1, frame.Init{Version: frame.Version, Headers: h})
	if err != nil {
		t.Fatal(err)
	}
	p := &RawPeer{Conn: nc, r: frame.NewReader(nc)}
	p.Send(t, b)
	if f := p.Next(t, 5*time.Second); f == nil || f.Type != frame.TypeInitRes {
		t.Fatalf("handshake: got %v", f)
	}
	return p
}

// Send writes frames.
func (p *RawPeer) Send(t testing.TB, frames ...[]byte) {
	t.Helper()
	for _, f := range frames {
		if _, err := p.Write(f); err != nil {
			t.Fatalf("raw peer write: %v", err)
		}
	}
}

// Next reads the next frame, or returns nil when none comes within timeout
// or the connection closed. The frame is a copy.
func (p *RawPeer) Next(t testing.TB, timeout time.Duration) *frame.Frame {
	t.Helper()
	p.SetReadDeadline(time.Now().Add(timeout))
	f, err := p.r.ReadFrame()
	if err != nil {
		return nil
	}
	raw := bytes.Clone(f.Raw)
	g := *f
	g.Raw, g.Payload = raw, raw[frame.HeaderSize:]
	return &g
}

// CallFrames encodes a call req with message id into its frames (several
// when the args pass a frame), with a CRC-32 checksum.
func CallFrames(t testing.TB, id uint32, service, method string, headers frame.Headers, arg2, arg3 []byte) [][]byte {
	t.Helper()
	var frames [][]byte
	w := frame.MessageWriter{Emit: func(b []byte) error { frames = append(frames, bytes.Clone(b)); return nil }}
	if err := w.BeginCallReq(id, &frame.CallReq{TTL: 5000, Service: []byte(service), Headers: headers, Checksum: frame.ChecksumCRC32}); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteArgs([]byte(method), arg2, arg3); err != nil {
		t.Fatal(err)
	}
	return frames
}
