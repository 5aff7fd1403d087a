package conn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/testkit"
)

// pair starts a listener whose connections serve h and returns a client
// connection to it.
func pair(t testing.TB, h Handler) (*Conn, chan *Conn) {
	t.Helper()
	return pairWith(t, h, Options{ProcessName: "test-client"})
}

// pairWith is pair with the client connection's options.
func pairWith(t testing.TB, h Handler, o Options) (*Conn, chan *Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	servers := make(chan *Conn, 16)
	go func() {
		for {
			nc, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				sc, err := Server(nc, Options{HostPort: l.Addr().String(), ProcessName: "test-server", Handler: h})
				if err == nil {
					servers <- sc
				}
			}()
		}
	}()
	c, err := Dial(context.Background(), l.Addr().String(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); l.Close() })
	return c, servers
}

func echo(ctx context.Context, req *Request) (*Response, error) {
	body, err := req.ReadBody(1 << 30)
	if err != nil {
		return nil, err
	}
	return &Response{Arg2: req.Arg2, Arg3: body, Checksum: req.Checksum}, nil
}

func call(c *Conn, method string, arg3 []byte, timeout time.Duration) (*Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return c.Call(ctx, &Request{
		Service: "svc", Method: method,
		Headers: frame.AppendHeader(frame.AppendHeader(nil, "as", "raw"), "cn", "test"),
		Arg2:    []byte("h"), Arg3: arg3,
	})
}

func TestCallRoundTrip(t *testing.T) {
	c, _ := pair(t, echo)
	if p := c.Peer(); p.ProcessName != "test-server" || p.Ephemeral() {
		t.Fatalf("peer = %+v", p)
	}
	for _, size := range []int{0, 1024, 1 << 20, 10 << 20} {
		body := bytes.Repeat([]byte{byte(size)}, size)
		res, err := call(c, "echo", body, 10*time.Second)
		if err != nil {
			t.Fatalf("%d bytes: %v", size, err)
		}
		if !bytes.Equal(res.Arg3, body) || string(res.Arg2) != "h" {
			t.Fatalf("%d bytes: echoed %d bytes, arg2 %q", size, len(res.Arg3), res.Arg2)
		}
	}
	if err := c.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// Many calls share one connection; answers come back out of order and each
// reaches its own caller.
func TestConcurrentCallsOutOfOrder(t *testing.T) {
	n := 10000
	if testing.Short() {
		n = 1000
	}
	c, _ := pair(t, func(ctx context.Context, req *Request) (*Response, error) {
		time.Sleep(time.Duration(rand.IntN(21)) * time.Millisecond)
		return &Response{Arg3: append([]byte("re:"), req.Arg3...)}, nil
	})
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			want := fmt.Sprintf("call-%d", i)
			res, err := call(c, "m", []byte(want), 30*time.Second)
			if err != nil {
				errs <- err
				return
			}
			if string(res.Arg3) != "re:"+want {
				errs <- fmt.Errorf("call %d got %q", i, res.Arg3)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestTTLExpiry(t *testing.T) {
	abandoned := make(chan error, 1)
	c, _ := pair(t, func(ctx context.Context, req *Request) (*Response, error) {
		if req.Method != "slow" {
			return &Response{}, nil
		}
		select {
		case <-ctx.Done():
			abandoned <- ctx.Err()
		case <-time.After(5 * time.Second):
			abandoned <- errors.New("handler was not stopped at its TTL")
		}
		return &Response{}, nil
	})
	start := time.Now()
	_, err := call(c, "slow", nil, 100*time.Millisecond)
	var e *frame.Error
	if !errors.As(err, &e) || e.Code != frame.ErrCodeTimeout {
		t.Fatalf("got %v, want a timeout error", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("timeout took %v", d)
	}
	select {
	case err := <-abandoned:
		if err == nil || err.Error() == "handler was not stopped at its TTL" {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("handler never finished")
	}
	// The connection still works.
	if _, err := call(c, "x", nil, time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestCancelReachesHandler(t *testing.T) {
	started := make(chan struct{})
	stopped := make(chan struct{})
	c, _ := pair(t, func(ctx context.Context, req *Request) (*Response, error) {
		close(started)
		<-ctx.Done()
		close(stopped)
		return nil, ctx.Err()
	})
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-started; cancel() }()
	_, err := c.Call(ctx, &Request{Service: "s", Method: "m"})
	if frame.CodeOf(err) != frame.ErrCodeCancelled {
		t.Fatalf("got %v, want cancelled", err)
	}
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("cancel did not reach the handler")
	}
}

func TestHandlerErrorsKeepTheirCode(t *testing.T) {
	c, _ := pair(t, func(ctx context.Context, req *Request) (*Response, error) {
		switch req.Method {
		case "busy":
			return nil, frame.Errorf(frame.ErrCodeBusy, "too much")
		case "app":
			return &Response{Code: frame.ResAppError, Arg3: []byte("nope")}, nil
		}
		return nil, errors.New("boom")
	})
	if _, err := call(c, "busy", nil, time.Second); frame.CodeOf(err) != frame.ErrCodeBusy {
		t.Fatalf("busy: %v", err)
	}
	if _, err := call(c, "other", nil, time.Second); frame.CodeOf(err) != frame.ErrCodeUnexpected || err.(*frame.Error).Message != "boom" {
		t.Fatalf("plain error: %v", err)
	}
	res, err := call(c, "app", nil, time.Second)
	if err != nil || res.Code != frame.ResAppError || string(res.Arg3) != "nope" {
		t.Fatalf("app error: %+v %v", res, err)
	}
}

// A 100 MiB body streams through without being held whole on either side.
func TestStreamingLargeBody(t *testing.T) {
	const size = 100 << 20
	firstBytes := make(chan struct{})
	c, _ := pair(t, func(ctx context.Context, req *Request) (*Response, error) {
		if req.Body == nil {
			return nil, errors.New("a 100 MiB body arrived whole")
		}
		buf := make([]byte, 32<<10)
		var n int64
		for {
			k, err := req.Body.Read(buf)
			if n == 0 && k > 0 {
				close(firstBytes)
			}
			n += int64(k)
			if err == io.EOF {
				break
			}
			if err != nil {
				return nil, err
			}
		}
		// Answer with a streamed body of the same size.
		return &Response{Arg3: nil, Body: io.LimitReader(zeros{}, n)}, nil
	})
	// The sender does not finish writing until the handler has begun reading:
	// a handler that waited for the whole body would deadlock this test.
	body := io.MultiReader(io.LimitReader(zeros{}, 1<<20), waitReader{firstBytes}, io.LimitReader(zeros{}, size-(1<<20)))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := c.Call(ctx, &Request{Service: "s", Method: "up", Body: body, StreamResponse: true})
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, res.Body)
	if err != nil || n != size {
		t.Fatalf("streamed back %d bytes, err %v", n, err)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// waitReader returns EOF once its channel is closed, blocking until then.
type waitReader struct{ ch chan struct{} }

func (w waitReader) Read(p []byte) (int, error) {
	select {
	case <-w.ch:
	case <-time.After(20 * time.Second):
		return 0, errors.New("handler never started reading")
	}
	return 0, io.EOF
}

func TestShutdownFinishesInFlightCalls(t *testing.T) {
	release := make(chan struct{})
	c, servers := pair(t, func(ctx context.Context, req *Request) (*Response, error) {
		<-release
		return &Response{Arg3: []byte("done")}, nil
	})
	results := make(chan error, 1)
	go func() {
		res, err := call(c, "m", nil, 10*time.Second)
		if err == nil && string(res.Arg3) != "done" {
			err = fmt.Errorf("got %q", res.Arg3)
		}
		results <- err
	}()
	sc := <-servers
	testkit.WaitFor(t, 5*time.Second, "condition", func() bool { sc.mu.Lock(); defer sc.mu.Unlock(); return len(sc.in) == 1 })
	shut := make(chan error, 1)
	go func() { shut <- sc.Shutdown(context.Background()) }()
	// New calls are declined while the old one runs.
	testkit.WaitFor(t, 5*time.Second, "condition", func() bool { sc.mu.Lock(); defer sc.mu.Unlock(); return sc.draining })
	if _, err := call(c, "m", nil, time.Second); frame.CodeOf(err) != frame.ErrCodeDeclined {
		t.Fatalf("call during drain: %v", err)
	}
	close(release)
	if err := <-results; err != nil {
		t.Fatalf("in-flight call: %v", err)
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("client did not see the close")
	}
}

func TestProtocolErrorClosesOnlyThatConnection(t *testing.T) {
	good, servers := pair(t, echo)
	<-servers
	addr := good.RemoteAddr().String()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	init, _ := frame.AppendInit(nil, frame.TypeInitReq, 1, frame.Init{Version: 2, Headers: map[string]string{"host_port": "0.0.0.0:0", "process_name": "evil"}})
	nc.Write(init)
	r := frame.NewReader(nc)
	if f, err := r.ReadFrame(); err != nil || f.Type != frame.TypeInitRes {
		t.Fatalf("handshake: %v", err)
	}
	// A call req whose service length runs past the frame.
	bad := make([]byte, frame.HeaderSize+1+4+frame.TracingSize+1)
	frame.PutHeader(bad, frame.Header{Size: uint16(len(bad)), Type: frame.TypeCallReq, ID: 5})
	bad[len(bad)-1] = 200
	nc.Write(bad)
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	f, err := r.ReadFrame()
	if err != nil || f.Type != frame.TypeError || f.ID != frame.ConnErrorID {
		t.Fatalf("want a connection error frame, got %v %v", f, err)
	}
	m, _ := frame.DecodeError(f.Payload)
	if m.Code != frame.ErrCodeProtocol {
		t.Fatalf("error code %s", m.Code)
	}
	if _, err := r.ReadFrame(); err == nil {
		t.Fatal("connection stayed open after a protocol error")
	}
	if _, err := call(good, "m", []byte("x"), time.Second); err != nil {
		t.Fatalf("other connection broken: %v", err)
	}
}

func TestHandshakeRefusals(t *testing.T) {
	_, servers := pair(t, echo)
	_ = servers
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	defer l.Close()
	go func() {
		for {
			nc, err := l.Accept()
			if err != nil {
				return
			}
			go Server(nc, Options{Handler: echo})
		}
	}()
	for name, hdrs := range map[string]map[string]string{
		"no host_port":    {"process_name": "p"},
		"no process_name": {"host_port": "1.2.3.4:5"},
	} {
		nc, _ := net.Dial("tcp", l.Addr().String())
		b, _ := frame.AppendInit(nil, frame.TypeInitReq, 1, frame.Init{Version: 2, Headers: hdrs})
		nc.Write(b)
		nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		f, err := frame.NewReader(nc).ReadFrame()
		if err != nil || f.Type != frame.TypeError {
			t.Fatalf("%s: want error frame, got %v %v", name, f, err)
		}
		nc.Close()
	}
	nc, _ := net.Dial("tcp", l.Addr().String())
	b, _ := frame.AppendInit(nil, frame.TypeInitReq, 1, frame.Init{Version: 3, Headers: map[string]string{"host_port": "a:1", "process_name": "p"}})
	nc.Write(b)
	f, err := frame.NewReader(nc).ReadFrame()
	if err != nil || f.Type != frame.TypeError {
		t.Fatalf("version 3: %v %v", f, err)
	}
	nc.Close()
}

// A peer that stops reading cannot hold a caller forever: the write times
// out, the connection closes, and the call fails with a network error.
func TestPeerThatStopsReading(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		nc, err := l.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		// Answer the handshake, then never read again.
		frame.NewReader(nc).ReadFrame()
		b, _ := frame.AppendInit(nil, frame.TypeInitRes, 1, frame.Init{Version: 2, Headers: map[string]string{"host_port": "x:1", "process_name": "stuck"}})
		nc.Write(b)
		time.Sleep(30 * time.Second)
	}()
	c, err := Dial(context.Background(), l.Addr().String(), Options{WriteTimeout: 300 * time.Millisecond, Logger: testkit.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	_, err = c.Call(context.Background(), &Request{Service: "s", Method: "m", Body: io.LimitReader(zeros{}, 64<<20)})
	if code := frame.CodeOf(err); code != frame.ErrCodeNetwork {
		t.Fatalf("got %v, want a network error", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("took %v to give up", d)
	}
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("connection still open")
	}
}

// A peer that connects and says nothing is dropped after the handshake timeout.
func TestSilentPeerHandshakeTimeout(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	start := time.Now()
	_, err := Server(b, Options{HandshakeTimeout: 200 * time.Millisecond, Logger: testkit.Quiet})
	if err == nil {
		t.Fatal("handshake with a silent peer succeeded")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("gave up after %v", d)
	}
}

// A call that runs past its context's deadline fails as a *frame.Error with
// ErrCodeTimeout that is also context.DeadlineExceeded, whichever timer
// fires first (ours, or the peer's answering Timeout at the TTL); a Timeout
// the peer answers while time is left is only the wire error.
func TestDeadlineErrorsMatchBothWays(t *testing.T) {
	c, _ := pair(t, func(ctx context.Context, req *Request) (*Response, error) {
		if req.Method == "timeout-now" {
			return nil, frame.Errorf(frame.ErrCodeTimeout, "my own backend timed out")
		}
		<-ctx.Done()
		return nil, ctx.Err()
	})
	for _, tc := range []struct {
		method   string
		deadline bool
	}{
		{"hang", true},
		{"timeout-now", false},
	} {
		t.Run(tc.method, func(t *testing.T) {
			_, err := call(c, tc.method, nil, 50*time.Millisecond)
			var e *frame.Error
			if !errors.As(err, &e) || e.Code != frame.ErrCodeTimeout {
				t.Fatalf("got %v, want a Timeout *frame.Error", err)
			}
			if got := errors.Is(err, context.DeadlineExceeded); got != tc.deadline {
				t.Fatalf("errors.Is(%v, DeadlineExceeded) = %v, want %v", err, got, tc.deadline)
			}
		})
	}
	ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	if _, err := c.Call(ctx, &Request{Service: "svc", Method: "hang"}); !errors.Is(err, context.DeadlineExceeded) || frame.CodeOf(err) != frame.ErrCodeTimeout {
		t.Fatalf("a call sent past its deadline: %v", err)
	}
}

// Cancelled half-sent requests are dropped at once by the server: 1,500 of
// them (over its 1,024 limit of requests in assembly) leave its connection
// working, where before each one stayed in assembly until the connection
// died of "more than 1024 calls half sent".
func TestCancelledHalfSentCallsAreDropped(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	served := make(chan *Conn, 1)
	go func() {
		nc, err := l.Accept()
		if err == nil {
			if sc, err := Server(nc, Options{HostPort: l.Addr().String(), Handler: echo, Logger: testkit.Quiet}); err == nil {
				served <- sc
			}
		}
	}()
	p := testkit.DialRaw(t, l.Addr().String(), nil)
	sc := <-served
	h := frame.AppendHeader(nil, "as", "raw")
	for id := uint32(10); id < 1510; id++ {
		frames := testkit.CallFrames(t, id, "svc", "echo", h, nil, bytes.Repeat([]byte("b"), 70<<10))
		cancel, _ := frame.AppendCancel(nil, id, frame.Cancel{Why: []byte("gave up")})
		p.Send(t, frames[0], cancel) // the first frame only, then the cancel
	}
	for _, f := range testkit.CallFrames(t, 2000, "svc", "echo", h, []byte("h"), []byte("still here")) {
		p.Send(t, f)
	}
	for {
		f := p.Next(t, 5*time.Second)
		if f == nil {
			t.Fatalf("no answer to a whole call after 1,500 cancelled half-sent ones (server closed: %v)", sc.Closed())
		}
		if f.ID == 2000 {
			if f.Type != frame.TypeCallRes {
				m, _ := frame.DecodeError(f.Payload)
				t.Fatalf("the whole call got %s: %s", f.Type, m.Message)
			}
			break
		}
	}
	testkit.WaitFor(t, 5*time.Second, "the cancelled calls forgotten", func() bool {
		sc.mu.Lock()
		defer sc.mu.Unlock()
		return len(sc.in) == 0
	})
}

// TryGet never waits: a dial under way gives ready; a failed dial marks the
// address down, answered at once (with when it is tried again) while a
// probe dials in the background after the wait; once a probe succeeds the
// connection is there.
func TestPoolTryGetNeverWaits(t *testing.T) {
	release := make(chan struct{})
	fail := true
	var dials int
	var mu sync.Mutex
	the := &Conn{closed: make(chan struct{})} // open: all the Pool asks of it
	p := NewPool(func(ctx context.Context, addr string) (*Conn, error) {
		mu.Lock()
		dials++
		f := fail
		mu.Unlock()
		<-release
		if f {
			return nil, errors.New("refused")
		}
		return the, nil
	})
	c, ready, err := p.TryGet("h:1")
	if c != nil || ready == nil || err != nil {
		t.Fatalf("first TryGet: %v %v %v", c, ready, err)
	}
	if _, again, _ := p.TryGet("h:1"); again != ready {
		t.Fatal("a second TryGet during the dial did not share it")
	}
	close(release)
	<-ready
	_, ready, err = p.TryGet("h:1")
	var down *DownError
	if ready != nil || !errors.As(err, &down) || time.Until(down.RetryAt()) < 500*time.Millisecond {
		t.Fatalf("after a failed dial: ready %v, %v", ready, err)
	}
	mu.Lock()
	fail = false
	mu.Unlock()
	time.Sleep(time.Until(down.RetryAt()) + 10*time.Millisecond)
	if _, ready, err := p.TryGet("h:1"); ready != nil || !errors.As(err, &down) {
		t.Fatalf("past its wait, while the probe dials: ready %v, %v (want the old error at once)", ready, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, _, _ := p.TryGet("h:1")
		if c == the {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the probe's connection never came")
		}
		time.Sleep(time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if dials != 2 {
		t.Fatalf("%d dials, want the first and one probe", dials)
	}
}
