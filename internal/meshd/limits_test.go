package meshd_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshrpc/mesh/client"
	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/meshd"
	"github.com/meshrpc/mesh/internal/relay"
	"github.com/meshrpc/mesh/internal/testkit"
)

// startLimited runs a meshd with limits and the echo service behind it.
func startLimited(t *testing.T, l meshd.Limits) *meshd.Daemon {
	t.Helper()
	d, err := meshd.Start(meshd.Config{Listen: "127.0.0.1:0", Admin: "127.0.0.1:0", Registry: discovery.NewLocal(), Logger: testkit.Quiet, Limits: l})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Shutdown(context.Background()) })
	echoServer(t, d.Addr(), "echo")
	return d
}

// 1,100 calls a caller starts and never finishes sending cannot kill the
// echo service's connection (its SDK fails a connection past 1,024 calls
// in assembly): past 64 the caller's own calls are answered busy, and
// everyone else's calls go on.
func TestHalfSentCallsCannotKillTheService(t *testing.T) {
	d := startLimited(t, meshd.Limits{})
	stop := benign(t, d)
	p := testkit.DialRaw(t, d.Addr(), nil)
	h := frame.AppendHeader(nil, "as", "raw")
	first := testkit.CallFrames(t, 1, "echo", "echo", h, nil, make([]byte, 100<<10))[0]
	for id := uint32(1); id <= 1100; id++ {
		f := bytes.Clone(first)
		frame.SetID(f, id)
		p.Send(t, f)
	}
	busy := 0
	for busy < 1100-relay.DefaultHalfSentPerCaller {
		f := p.Next(t, 5*time.Second)
		if f == nil {
			t.Fatalf("only %d busy answers", busy)
		}
		if m, err := frame.DecodeError(f.Payload); f.Type == frame.TypeError && err == nil && m.Code == frame.ErrCodeBusy {
			busy++
		}
	}
	time.Sleep(200 * time.Millisecond) // benign calls go on while the 64 half-sent calls are held
	calls, failed := stop()
	t.Logf("1,100 half-sent calls from one connection: %d answered busy; %d benign calls, %d failed", busy, calls, failed)
	if st := d.Status(context.Background()); len(st.Local) != 1 {
		t.Fatalf("the echo instance is gone: %v", st.Local)
	}
	if got := testkit.Metric(t, d.AdminAddr(), `mesh_limit_hits_total{limit="half_sent_per_caller"}`); got == "0" {
		t.Fatal("the limit's hits were not counted")
	}
}

// A call asking for a ttl over MaxTTL is held at most MaxTTL.
func TestMaxTTLCapsACall(t *testing.T) {
	d := startLimited(t, meshd.Limits{Limits: relay.Limits{MaxTTL: 300 * time.Millisecond}})
	s := client.NewServer(client.Options{Logger: testkit.Quiet})
	s.Register("mute", "wait", client.HandlerFunc(func(ctx context.Context, call *client.Call) (*client.Response, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}))
	if err := s.Advertise(context.Background(), d.Addr()); err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	c := dialMeshd(t, d.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	_, err := c.Call(ctx, "mute", "wait", nil, nil, client.WithRetryFlags("n"))
	took := time.Since(start)
	if frame.CodeOf(err) != frame.ErrCodeTimeout || took > 5*time.Second {
		t.Fatalf("a 1-minute call to a mute service: %v after %v, want a timeout after about 300ms", err, took)
	}
	if got := testkit.Metric(t, d.AdminAddr(), `mesh_limit_hits_total{limit="max_ttl"}`); got == "0" {
		t.Fatal("the cap was not counted")
	}
}

// A caller that sends calls and never reads the answers loses its own
// connection once MaxQueued bytes wait for it; the echo service's read loop,
// which writes those answers, never waits on it, so other callers see
// nothing.
func TestCallerThatNeverReadsLosesOnlyItsConnection(t *testing.T) {
	d := startLimited(t, meshd.Limits{MaxQueued: 256 << 10})
	stop := benign(t, d)
	sent, closed := neverReads(t, d, 20*time.Second)
	calls, failed := stop()
	t.Logf("a caller that never reads sent %d calls before meshd closed it; %d benign calls, %d failed", sent, calls, failed)
	if !closed {
		t.Fatal("meshd never closed the connection of a caller that does not read")
	}
	if got := testkit.Metric(t, d.AdminAddr(), `mesh_limit_hits_total{limit="slow_peer"}`); got == "0" {
		t.Fatal("the slow peer was not counted")
	}
	testkit.WaitFor(t, 5*time.Second, "the closure counted", func() bool {
		return testkit.Metric(t, d.AdminAddr(), `mesh_connections_closed_total{reason="slow_peer"}`) == "1"
	})
}

// Callers that never read, each far under its own MaxQueued, together pass
// MaxQueuedTotal: they lose their connections, and what meshd queued for
// them goes back to 0, while a benign caller sees nothing.
func TestSlowPeersShareOneBudget(t *testing.T) {
	d := startLimited(t, meshd.Limits{MaxQueued: 256 << 20, MaxQueuedTotal: 1 << 20})
	stop := benign(t, d)
	const slow = 4
	done := make(chan bool, slow)
	for range slow {
		go func() {
			_, closed := neverReads(t, d, 30*time.Second)
			done <- closed
		}()
	}
	for range slow {
		if !<-done {
			t.Fatal("meshd never closed a caller that does not read")
		}
	}
	calls, failed := stop()
	t.Logf("%d callers that never read, 1 MiB for all: closed; %d benign calls, %d failed", slow, calls, failed)
	if got := testkit.Metric(t, d.AdminAddr(), `mesh_limit_hits_total{limit="queued_total"}`); got == "0" {
		t.Fatal("the shared bound was not counted")
	}
	testkit.WaitFor(t, 5*time.Second, "mesh_queued_bytes back to 0", func() bool {
		return testkit.Metric(t, d.AdminAddr(), "mesh_queued_bytes") == "0"
	})
}

// neverReads sends 1 KiB echo calls on a raw connection that reads nothing
// until meshd closes it (closed) or limit passes, and returns the calls sent.
func neverReads(t *testing.T, d *meshd.Daemon, limit time.Duration) (sent int, closed bool) {
	p := testkit.DialRaw(t, d.Addr(), nil)
	p.Conn.(*net.TCPConn).SetReadBuffer(4 << 10)
	h := frame.AppendHeader(nil, "as", "raw")
	body := make([]byte, 1<<10)
	deadline := time.Now().Add(limit)
	for id := uint32(1); time.Now().Before(deadline); id++ {
		p.SetWriteDeadline(time.Now().Add(2 * time.Second))
		if _, err := p.Write(testkit.CallFrames(t, id, "echo", "echo", h, nil, body)[0]); err != nil {
			return sent, true // meshd closed the connection
		}
		sent++
	}
	return sent, false
}

// Connections past the limit per address are closed at once, and those
// that never complete the handshake are closed at its deadline; the
// connections already serving calls are untouched.
func TestConnectionLimits(t *testing.T) {
	d := startLimited(t, meshd.Limits{ConnectionsPerAddr: 30, HandshakeTimeout: 300 * time.Millisecond})
	c := dialMeshd(t, d.Addr()) // the echo server's and this client's connections count too
	closedAfter := make(chan time.Duration, 40)
	for range 40 {
		nc, err := net.Dial("tcp", d.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		start := time.Now()
		go func() {
			nc.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := nc.Read(make([]byte, 1)); err == io.EOF {
				closedAfter <- time.Since(start)
			} else {
				closedAfter <- -1 // not closed
			}
		}()
	}
	early, atDeadline := 0, 0
	for range 40 {
		switch took := <-closedAfter; {
		case took < 0:
			t.Fatal("a connection that never handshakes was not closed within 5s")
		case took < 150*time.Millisecond:
			early++
		case took < 2*time.Second:
			atDeadline++
		}
	}
	t.Logf("40 connections that never handshake: %d closed at once (over 30 per address), %d at the 300ms handshake deadline", early, atDeadline)
	if early != 12 || atDeadline != 28 { // 2 of the 30 are the echo server's and the client's
		t.Fatalf("%d closed at once and %d at the deadline, want 12 and 28", early, atDeadline)
	}
	if body, err := callEcho(c, "echo", []byte("x")); err != nil || string(body) != "echo:x" {
		t.Fatalf("a connection serving calls: %q %v", body, err)
	}
	if got := testkit.Metric(t, d.AdminAddr(), "mesh_connections_refused_total"); got == "0" {
		t.Fatal("the refused connections were not counted")
	}
	// Counted just after the socket closes, so the peer may see EOF first.
	testkit.WaitFor(t, time.Second, "28 handshake timeouts counted", func() bool {
		return testkit.Metric(t, d.AdminAddr(), `mesh_connections_closed_total{reason="handshake_timeout"}`) == "28"
	})
}

// A silent connection is pinged after IdleTimeout and closed when it does
// not answer; one whose peer answers pings (any TChannel peer does) stays,
// calls or not. An init with more headers than frame.MaxInitHeaders is
// refused.
func TestIdleConnectionsArePinged(t *testing.T) {
	d := startLimited(t, meshd.Limits{IdleTimeout: 200 * time.Millisecond})
	c := dialMeshd(t, d.Addr())
	mute := testkit.DialRaw(t, d.Addr(), nil) // answers nothing, pings included
	start := time.Now()
	for {
		f := mute.Next(t, 3*time.Second)
		if f == nil {
			break // closed
		}
		if time.Since(start) > 3*time.Second {
			t.Fatal("a peer that does not answer pings was not closed")
		}
	}
	took := time.Since(start)
	time.Sleep(600 * time.Millisecond) // the SDK client and the echo server sit idle, answering pings
	if body, err := callEcho(c, "echo", []byte("x")); err != nil || string(body) != "echo:x" {
		t.Fatalf("an idle client that answers pings: %q %v", body, err)
	}
	t.Logf("a peer that does not answer pings was closed after %v (idle timeout 200ms)", took.Round(time.Millisecond))
	if took > 2*time.Second {
		t.Fatalf("closed only after %v", took)
	}

	many := map[string]string{}
	for i := range frame.MaxInitHeaders + 1 {
		many["x-"+strings.Repeat("h", i%10)+string(rune('a'+i%26))+string(rune('a'+i/26))] = "v"
	}
	nc, err := net.Dial("tcp", d.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	many[frame.InitHostPort], many[frame.InitProcessName] = frame.EphemeralHostPort, "many-headers"
	b, _ := frame.AppendInit(nil, frame.TypeInitReq, 1, frame.Init{Version: frame.Version, Headers: many})
	nc.Write(b)
	nc.SetReadDeadline(time.Now().Add(3 * time.Second))
	f, err := frame.NewReader(nc).ReadFrame()
	if err != nil || f.Type != frame.TypeError {
		t.Fatalf("an init with %d headers: %v %v, want a protocol error", len(many), f, err)
	}
	for reason, want := range map[string]string{"idle": "1", "handshake_refused": "1"} {
		testkit.WaitFor(t, 5*time.Second, reason+" counted", func() bool {
			return testkit.Metric(t, d.AdminAddr(), `mesh_connections_closed_total{reason="`+reason+`"}`) == want
		})
	}
}

// Calls to 20,000 made-up service names (and as many made-up caller names)
// are refused and leave nothing behind that grows with them: the refusal
// metric keeps at most 1,000 series plus "_other", and the heap after a GC is
// within a few MiB of where it started.
func TestMadeUpNamesCostNothingAfter(t *testing.T) {
	d := startLimited(t, meshd.Limits{})
	p := testkit.DialRaw(t, d.Addr(), nil)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	const n = 20000
	go func() {
		for i := range n {
			h := frame.AppendHeader(frame.AppendHeader(nil, "as", "raw"), "cn", fmt.Sprintf("caller-%d", i))
			p.Write(testkit.CallFrames(t, uint32(i+1), fmt.Sprintf("nosuch-%d-%s", i, strings.Repeat("x", 100)), "m", h, nil, nil)[0])
		}
	}()
	for got := 0; got < n; got++ {
		if f := p.Next(t, 5*time.Second); f == nil || f.Type != frame.TypeError {
			t.Fatalf("answer %d: %v", got, f)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	grew := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	res, err := http.Get("http://" + d.AdminAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	// Past 1,000 named series, refusals of each stage share one "_other"
	// series (a reader slower than the flood also gets busy answers, from
	// the conn_limit stage).
	// Made-up names are no labels: they are "_unknown" (past 1,000 named
	// series, refusals of each stage would share one "_other" series).
	series, edges := 0, 0
	for _, line := range strings.Split(string(b), "\n") {
		switch {
		case strings.HasPrefix(line, "mesh_stage_refusals_total{") && !strings.Contains(line, `service="_unknown"`) && !strings.Contains(line, `service="_other"`):
			series++
		case strings.HasPrefix(line, "mesh_calls_total{"):
			edges++
		}
	}
	t.Logf("%d calls to made-up names: heap %+d KiB after GC, %d named refusal series, %d series of calls per edge", n, grew>>10, series, edges)
	if series > 10 || edges > 10 || grew > 8<<20 {
		t.Fatalf("%d named refusal series, %d edge series, heap grew %d KiB", series, edges, grew>>10)
	}
}

// An instance that stops reading its requests cannot stall another host's
// calls: the last meshd before it writes to it from the read loop of the
// connection from the first meshd, which carries every call between the two
// hosts, so past its queue bound the calls to it are refused (busy) and the
// benign calls on the same connection go on.
func TestInstanceThatStopsReadingStallsNoOneElse(t *testing.T) {
	reg := discovery.NewLocal()
	start := func(addr string) *meshd.Daemon {
		host, _, _ := net.SplitHostPort(addr)
		return startWith(t, meshd.Config{Listen: addr, PeerListen: host + ":0", Trust: meshdTrust(t), Admin: "127.0.0.1:0", Registry: reg, Logger: testkit.Quiet,
			Limits: meshd.Limits{MaxQueued: 1 << 20}})
	}
	a, b := start("127.0.0.1:0"), start("127.0.0.2:0")
	echoServer(t, b.Addr(), "echo")
	proxy, freeze := freezingProxy(t, b.Addr())
	echoServer(t, proxy, "stuck")
	freeze() // from now on the stuck instance reads nothing meshd sends it

	c := dialMeshd(t, a.Addr())
	stop := testkit.Load(4, func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		res, err := c.Call(ctx, "echo", "echo", nil, []byte("ok"))
		if err == nil && string(res.Body) != "echo:ok" {
			err = fmt.Errorf("echo answered %q", res.Body)
		}
		return err
	})
	flood := dialMeshd(t, a.Addr())
	body := make([]byte, 256<<10)
	var busy, other atomic.Int64
	stopFlood := testkit.Load(64, func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := flood.Call(ctx, "stuck", "echo", nil, body)
		if frame.CodeOf(err) == frame.ErrCodeBusy {
			busy.Add(1)
		} else {
			other.Add(1)
		}
		return err
	})
	time.Sleep(3 * time.Second)
	stopFlood()
	calls, failed, first := stop()
	t.Logf("calls to an instance that stopped reading: %d busy, %d other; benign calls on the same hosts: %d, %d failed",
		busy.Load(), other.Load(), calls, failed)
	testkit.Unharmed(t, calls, failed, first)
	if busy.Load() == 0 {
		t.Fatal("no call to the stuck instance was refused busy: its queue never filled")
	}
	if got := testkit.Metric(t, b.AdminAddr(), `mesh_limit_hits_total{limit="slow_peer"}`); got == "0" {
		t.Fatal("the slow instance was not counted")
	}
}

// freezingProxy forwards TCP connections to target until freeze, after
// which it stops reading from target: the process behind it looks like one
// that stopped reading.
func freezingProxy(t *testing.T, target string) (addr string, freeze func()) {
	frozen := make(chan struct{})
	addr = proxy(t, "127.0.0.1", target, func(dst, src net.Conn, toTarget bool) {
		if toTarget {
			io.Copy(dst, src)
			return
		}
		src.(*net.TCPConn).SetReadBuffer(16 << 10)
		buf := make([]byte, 16<<10)
		for {
			select {
			case <-frozen:
				return // reads nothing more from target
			default:
			}
			n, err := src.Read(buf)
			if err != nil {
				return
			}
			dst.Write(buf[:n])
		}
	})
	return addr, sync.OnceFunc(func() { close(frozen) })
}

// proxy forwards the TCP connections made to a listener on ip to target,
// each direction through pipe (toTarget: from the client to target), and
// returns the listener's address.
func proxy(t *testing.T, ip, target string, pipe func(dst, src net.Conn, toTarget bool)) string {
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			t.Cleanup(func() { in.Close(); out.Close() })
			go pipe(out, in, true)
			go pipe(in, out, false)
		}
	}()
	return l.Addr().String()
}
