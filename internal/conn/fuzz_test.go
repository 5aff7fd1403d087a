package conn

import (
	"context"
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/testkit"
)

// FuzzConn feeds a live server connection a valid handshake followed by
// arbitrary bytes. The connection may refuse them, but it must not panic, and
// once the peer hangs up it must close and release every call.
func FuzzConn(f *testing.F) {
	seed := func(frames ...[]byte) []byte {
		var b []byte
		for _, fr := range frames {
			b = append(b, fr...)
		}
		return b
	}
	var calls [][]byte
	mw := frame.MessageWriter{Emit: func(b []byte) error { calls = append(calls, append([]byte(nil), b...)); return nil }}
	mw.BeginCallReq(1, &frame.CallReq{TTL: 1000, Service: []byte("s"), Checksum: frame.ChecksumCRC32})
	mw.WriteArgs([]byte("m"), []byte("h"), make([]byte, 70000))
	f.Add(seed(calls...))
	f.Add(seed(calls[0]))
	f.Add(seed(frame.AppendPing(nil, frame.TypePingReq, 3)))
	cancel, _ := frame.AppendCancel(nil, 1, frame.Cancel{})
	f.Add(seed(calls[0], cancel))
	f.Add(seed(frame.AppendError(nil, 9, frame.ErrorMsg{Code: frame.ErrCodeBusy})))

	init, _ := frame.AppendInit(nil, frame.TypeInitReq, 1, frame.Init{Version: 2, Headers: map[string]string{
		frame.InitHostPort: frame.EphemeralHostPort, frame.InitProcessName: "fuzz",
	}})
	handler := func(ctx context.Context, req *Request) (*Response, error) {
		body, err := req.ReadBody(1 << 20)
		if err != nil {
			return nil, err
		}
		return &Response{Arg3: body}, nil
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// A hang anywhere, even outside the checks below, fails with a dump.
		watchdog := time.AfterFunc(30*time.Second, func() {
			buf := make([]byte, 1<<20)
			panic("fuzz input hung:\n" + string(buf[:runtime.Stack(buf, true)]))
		})
		defer watchdog.Stop()
		peer, local := net.Pipe()
		go io.Copy(io.Discard, peer)
		go func() {
			peer.Write(init)
			peer.Write(data)
			peer.Close()
		}()
		c, err := Server(local, Options{Handler: handler, HandshakeTimeout: time.Second, WriteTimeout: time.Second,
			Logger: testkit.Quiet})
		if err != nil {
			return
		}
		select {
		case <-c.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("connection still open 10s after the peer hung up")
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			c.mu.Lock()
			n := len(c.in)
			c.mu.Unlock()
			if n == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d calls still held 10s after close", n)
			}
			time.Sleep(time.Millisecond)
		}
	})
}
