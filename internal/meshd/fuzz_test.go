package meshd_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/meshd"
	"github.com/meshrpc/mesh/internal/testkit"
)

// FuzzMeshd sends arbitrary bytes, as an app would after its handshake, to
// a meshd with a real echo service behind it. Whatever they are, the echo
// service's connection must not die (its instance stays the same) and a
// benign caller's call must still succeed.
func FuzzMeshd(f *testing.F) {
	h := frame.AppendHeader(nil, "as", "raw")
	one := testkit.CallFrames(f, 7, "echo", "echo", h, []byte("h"), []byte("body"))[0]
	f.Add(one)
	bad := append([]byte(nil), one...)
	bad[len(bad)-1] ^= 1
	f.Add(bad)
	var multi []byte
	for _, fr := range testkit.CallFrames(f, 8, "echo", "echo", h, nil, make([]byte, 66<<10)) {
		multi = append(multi, fr...)
	}
	f.Add(multi[:len(multi)-100]) // the second frame cut short
	f.Add(multi)
	cancel, _ := frame.AppendCancel(nil, 8, frame.Cancel{})
	f.Add(append(append([]byte(nil), multi[:len(multi)-100]...), cancel...))
	f.Add(callReqFrame(9, "echo", 0, []byte("echo")))
	f.Add(callReqFrame(10, "echo", frame.FlagMoreFragments, []byte("e")))

	d, err := meshd.Start(meshd.Config{Listen: "127.0.0.1:0", Registry: discovery.NewLocal(), Logger: testkit.Quiet})
	if err != nil {
		f.Fatal(err)
	}
	defer d.Shutdown(context.Background())
	echoServer(f, d.Addr(), "echo")
	instance := func() string {
		if l := d.Status(context.Background()).Local; len(l) == 1 {
			return l[0].ID
		}
		return ""
	}
	want := instance()
	c := dialMeshd(f, d.Addr())
	f.Fuzz(func(t *testing.T, data []byte) {
		p := testkit.DialRaw(t, d.Addr(), nil)
		p.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := p.Write(data); err != nil && !isClosed(err) {
			t.Fatalf("meshd did not take %d bytes within 5s: %v", len(data), err)
		}
		start := time.Now()
		for p.Next(t, 5*time.Millisecond) != nil { // read what comes back until it stops
			if time.Since(start) > 5*time.Second {
				t.Fatal("meshd kept answering for 5s")
			}
		}
		p.Close()
		if body, err := callEcho(c, "echo", []byte("ok")); err != nil || string(body) != "echo:ok" {
			t.Fatalf("a benign call after the input: %q %v", body, err)
		}
		if got := instance(); got != want {
			t.Fatalf("the echo instance changed from %q to %q: its connection died", want, got)
		}
	})
}

// isClosed reports whether a write failed because meshd closed the
// connection (as it does on a protocol error), not because it stalled.
func isClosed(err error) bool {
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}
