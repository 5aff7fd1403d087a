package meshd_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/meshrpc/mesh/client"
	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/meshd"
	"github.com/meshrpc/mesh/internal/testkit"
)

// benign calls echo through d from 4 goroutines until stop, which fails t
// unless enough calls ran and none failed (testkit.Unharmed).
func benign(t *testing.T, d *meshd.Daemon) (stop func() (calls, failed int64)) {
	c := dialMeshd(t, d.Addr())
	stopLoad := testkit.Load(4, func(context.Context) error {
		body, err := callEcho(c, "echo", []byte("ok"))
		if err == nil && string(body) != "echo:ok" {
			err = fmt.Errorf("echo answered %q", body)
		}
		return err
	})
	return func() (int64, int64) {
		calls, failed, first := stopLoad()
		testkit.Unharmed(t, calls, failed, first)
		return calls, failed
	}
}

// callReqFrame builds a call req frame by hand from its payload fields, for
// frames no encoder would make.
func callReqFrame(id uint32, service string, flags byte, args ...[]byte) []byte {
	p := []byte{flags, 0, 0, 0x13, 0x88} // ttl 5000ms
	p = append(p, make([]byte, frame.TracingSize)...)
	p = append(p, byte(len(service)))
	p = append(p, service...)
	p = append(p, 1, 2, 'a', 's', 3, 'r', 'a', 'w') // as: raw
	p = append(p, byte(frame.ChecksumNone))
	for _, a := range args {
		p = binary.BigEndian.AppendUint16(p, uint16(len(a)))
		p = append(p, a...)
	}
	h := make([]byte, frame.HeaderSize)
	binary.BigEndian.PutUint16(h, uint16(frame.HeaderSize+len(p)))
	h[2] = byte(frame.TypeCallReq)
	binary.BigEndian.PutUint32(h[4:], id)
	return append(h, p...)
}

// expectError reads frames until the error frame for id, and checks its code.
func expectError(t *testing.T, p *testkit.RawPeer, id uint32, code frame.ErrCode) {
	t.Helper()
	for {
		f := p.Next(t, 5*time.Second)
		if f == nil {
			t.Fatalf("call %d: no answer", id)
		}
		if f.ID != id {
			continue
		}
		m, err := frame.DecodeError(f.Payload)
		if f.Type != frame.TypeError || err != nil || m.Code != code {
			t.Fatalf("call %d: got %s (%v %q), want a %v error", id, f.Type, m.Code, m.Message, code)
		}
		return
	}
}

// Malformed calls from one app fail alone: each is answered with a
// bad-request error, and none reaches the echo service, whose connection
// (and every other caller's calls) carry on. Before the edge checks, one
// bad checksum made the service's connection die, withdrawing the instance.
func TestMalformedCallsFailAlone(t *testing.T) {
	a := startMeshd(t, "127.0.0.1:0", discovery.NewLocal())
	echoServer(t, a.Addr(), "echo")
	stop := benign(t, a)
	p := testkit.DialRaw(t, a.Addr(), nil)
	h := frame.AppendHeader(nil, "as", "raw")
	big := make([]byte, 150<<10)
	for i := range 50 {
		id := uint32(100 + 3*i)
		// A single-frame call whose arg3 does not match its CRC-32.
		f := testkit.CallFrames(t, id, "echo", "echo", h, nil, []byte("body"))[0]
		f[len(f)-1] ^= 0xFF
		p.Send(t, f)
		expectError(t, p, id, frame.ErrCodeBadRequest)
		// A call whose only frame ends after arg1.
		p.Send(t, callReqFrame(id+1, "echo", 0, []byte("echo")))
		expectError(t, p, id+1, frame.ErrCodeBadRequest)
		// A 150 KiB call whose second frame's checksum is wrong: the first
		// frame went on to the service, which is told to drop the call.
		frames := testkit.CallFrames(t, id+2, "echo", "echo", h, nil, big)
		frames[1][len(frames[1])-1] ^= 0xFF
		p.Send(t, frames...)
		expectError(t, p, id+2, frame.ErrCodeBadRequest)
	}
	calls, failed := stop()
	t.Logf("150 malformed calls: each refused as bad request; %d benign calls meanwhile, %d failed", calls, failed)
	// The last benign call's answer can reach its caller just before the
	// relay forgets the call: in flight drops to 0 a moment after.
	testkit.WaitFor(t, 2*time.Second, "no call in flight after the malformed calls", func() bool {
		return a.Status(context.Background()).InFlight == 0
	})
	if st := a.Status(context.Background()); len(st.Local) != 1 {
		t.Fatalf("echo instance %v after the malformed calls", st.Local)
	}
}

// A service that answers with a malformed response fails only that call:
// the caller hears an unexpected error, and its connection (shared with its
// other calls) stays up.
func TestMalformedAnswerFailsOnlyThatCall(t *testing.T) {
	a := startMeshd(t, "127.0.0.1:0", discovery.NewLocal())
	echoServer(t, a.Addr(), "echo")
	svc := testkit.DialRaw(t, a.Addr(), nil)
	for _, f := range testkit.CallFrames(t, 1, "hyperbahn", "ad", frame.AppendHeader(nil, "as", "json"), []byte("{}"), []byte(`{"services":[{"serviceName":"bad","cost":0}]}`)) {
		svc.Send(t, f)
	}
	if f := svc.Next(t, 5*time.Second); f == nil || f.Type != frame.TypeCallRes {
		t.Fatalf("advertise: %v", f)
	}
	go func() { // answer every call with a response whose checksum is wrong
		for {
			f := svc.Next(t, 10*time.Second)
			if f == nil {
				return
			}
			if f.Type != frame.TypeCallReq {
				continue
			}
			var out []byte
			w := frame.MessageWriter{Emit: func(b []byte) error { out = append(out, b...); return nil }}
			w.BeginCallRes(f.ID, &frame.CallRes{Checksum: frame.ChecksumCRC32})
			w.WriteArgs(nil, nil, []byte("garbled"))
			out[len(out)-1] ^= 0xFF
			svc.Write(out)
		}
	}()
	c := dialMeshd(t, a.Addr())
	for i := range 20 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := c.Call(ctx, "bad", "x", nil, nil, client.WithRetryFlags("n"))
		cancel()
		if frame.CodeOf(err) != frame.ErrCodeUnexpected {
			t.Fatalf("call %d to the garbling service: %v, want unexpected", i, err)
		}
		if body, err := callEcho(c, "echo", []byte("x")); err != nil || string(body) != "echo:x" {
			t.Fatalf("the same client's echo call after garbled answer %d: %q %v", i, body, err)
		}
	}
}
