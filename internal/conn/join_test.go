package conn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/testkit"
)

// Joined connections carry calls both ways as a socket pair would: small
// and large bodies (fragmented, and streamed to the handler past 256 KiB),
// answers in any order, a handler that calls back over the same pair while
// its own call is in flight, the peer's name, and a close that reaches
// the other end.
func TestJoin(t *testing.T) {
	var b *Conn
	a, b := Join(Options{ProcessName: "app", Handler: echo}, Options{ProcessName: "meshd", HostPort: "127.0.0.1:1", Handler: func(ctx context.Context, req *Request) (*Response, error) {
		if req.Method == "back" { // call the caller while its call waits
			res, err := FromContext(ctx).Call(ctx, &Request{Service: "app", Method: "echo", Arg3: []byte("nested")})
			if err != nil {
				return nil, err
			}
			return &Response{Arg3: append([]byte("back:"), res.Arg3...)}, nil
		}
		return echo(ctx, req)
	}})
	if a.Peer().ProcessName != "meshd" || a.Peer().HostPort != "127.0.0.1:1" || b.Peer().ProcessName != "app" || !b.Peer().Ephemeral() {
		t.Fatalf("peers: %+v, %+v", a.Peer(), b.Peer())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for i, size := range []int{0, 1, 1000, 70000, 300000, 3 << 20} {
		for _, from := range []*Conn{a, b} {
			wg.Go(func() {
				body := bytes.Repeat([]byte{byte(i)}, size)
				res, err := from.Call(ctx, &Request{Service: "s", Method: "echo", Arg2: []byte("h"), Arg3: body})
				if err == nil && (!bytes.Equal(res.Arg3, body) || string(res.Arg2) != "h") {
					err = errors.New("a different answer")
				}
				if err != nil {
					errs <- err
				}
			})
		}
	}
	wg.Go(func() {
		res, err := a.Call(ctx, &Request{Service: "s", Method: "back"})
		if err == nil && string(res.Arg3) != "back:nested" {
			err = errors.New("nested: " + string(res.Arg3))
		}
		if err != nil {
			errs <- err
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	b.Close()
	select {
	case <-a.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("closing one end left the other open")
	}
	if _, err := a.Call(ctx, &Request{Service: "s", Method: "echo"}); frame.CodeOf(err) != frame.ErrCodeNetwork {
		t.Fatalf("a call on a closed joint: %v", err)
	}
}

// A frame that breaks the protocol ends both ends, as on a socket.
func TestJoinProtocolError(t *testing.T) {
	a, b := Join(Options{}, Options{Handler: echo})
	bad := frame.AppendPing(nil, frame.TypeInitReq, 7) // an init after the handshake
	a.Write(bad)
	for _, c := range []*Conn{a, b} {
		select {
		case <-c.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("an end is still open after a protocol error")
		}
	}
	// b fails with the protocol error, unless a's close (it got b's error
	// frame) reaches it first: then a says why.
	if why := "init req after the handshake"; !strings.Contains(fmt.Sprint(b.Err()), why) && !strings.Contains(fmt.Sprint(a.Err()), why) {
		t.Fatalf("closed with %v and %v", a.Err(), b.Err())
	}
}

// BenchmarkJoinCall is a call and its answer over joined connections and,
// for comparison, over a socket.
func BenchmarkJoinCall(b *testing.B) {
	body := make([]byte, 1024)
	run := func(b *testing.B, c *Conn) {
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Call(ctx, &Request{Service: "s", Method: "echo", Arg3: body}); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("joined", func(b *testing.B) {
		c, s := Join(Options{}, Options{Handler: echo})
		defer s.Close()
		run(b, c)
	})
	b.Run("socket", func(b *testing.B) {
		c, _ := pair(b, echo)
		run(b, c)
	})
}

// lockingRelayer holds one lock while it forwards and while it takes an
// answer, as the relay holds a call's lock.
type lockingRelayer struct {
	mu      sync.Mutex
	answers chan frame.Type
}

func (r *lockingRelayer) OfferCall(*Conn, *frame.Frame, *frame.CallReq, *frame.Fragment) bool {
	return false
}

func (r *lockingRelayer) Frame(_ *Conn, f *frame.Frame, _ *frame.Fragment) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.answers <- f.Type
}

func (r *lockingRelayer) Closed(*Conn, error) {}

// The relay may write to an app's end while it holds a lock the app's
// answer needs: an app end that refuses the call at once (it serves no
// calls) answers through its write loop, not from inside the relay's
// write, so the relay is not entered again under its own lock.
func TestJoinAnswersOutsideTheRelaysWrite(t *testing.T) {
	r := &lockingRelayer{answers: make(chan frame.Type, 1)}
	_, relayEnd := Join(Options{}, Options{Relayer: r})
	call := testkit.CallFrames(t, relayEnd.NewID(), "s", "m", frame.AppendHeader(nil, "as", "raw"), nil, []byte("x"))[0]
	done := make(chan struct{})
	go func() {
		r.mu.Lock()
		relayEnd.Write(call)
		r.mu.Unlock()
		close(done)
	}()
	select {
	case typ := <-r.answers:
		if typ != frame.TypeError {
			t.Fatalf("the app end answered %v, want its refusal", typ)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the relay's write never returned: entered again under its own lock")
	}
	<-done
}

// An Async server answers from other goroutines, later; a second answer
// to the same call is dropped; an error is sent as one; a body still
// arriving (past 256 KiB) is readable from the goroutine it hands it to.
func TestAsync(t *testing.T) {
	async := func(ctx context.Context, req *Request, answer func(*Response, error)) {
		switch {
		case req.Body != nil:
			go func() { answer(echo(ctx, req)) }()
		case req.Method == "fail":
			answer(nil, frame.Errorf(frame.ErrCodeBusy, "busy"))
		default:
			go func() {
				time.Sleep(time.Millisecond)
				answer(&Response{Arg3: req.Arg3}, nil)
				answer(&Response{Arg3: []byte("twice")}, nil)
			}()
		}
	}
	c, _ := Join(Options{}, Options{Async: async})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, size := range []int{1, 1000, 1 << 20} {
		body := bytes.Repeat([]byte{'a'}, size)
		res, err := c.Call(ctx, &Request{Service: "s", Method: "echo", Arg3: body})
		if err != nil || !bytes.Equal(res.Arg3, body) {
			t.Fatalf("%d bytes: %v", size, err)
		}
	}
	if _, err := c.Call(ctx, &Request{Service: "s", Method: "fail"}); frame.CodeOf(err) != frame.ErrCodeBusy {
		t.Fatalf("an error answer: %v", err)
	}
}

// A body still arriving when the joined connection closes ends with an
// error for the handler reading it, as on a socket whose read loop sees
// the end: no handler waits forever for the rest.
func TestJoinCloseEndsAStreamedBody(t *testing.T) {
	reading := make(chan struct{})
	readErr := make(chan error, 1)
	app, relayEnd := Join(Options{Handler: func(ctx context.Context, req *Request) (*Response, error) {
		close(reading)
		_, err := req.ReadBody(8 << 20)
		readErr <- err
		return nil, err
	}}, Options{})
	// The first frames of a call whose arg3 passes 256 KiB, and never its end.
	var mw frame.MessageWriter
	var frames []byte
	mw.Emit = func(b []byte) error { frames = append(frames, b...); return nil }
	if err := mw.BeginCallReq(relayEnd.NewID(), &frame.CallReq{TTL: 60000, Service: []byte("s"), Headers: frame.AppendHeader(nil, "as", "raw")}); err != nil {
		t.Fatal(err)
	}
	mw.Write([]byte("m"))
	mw.EndArg()
	mw.EndArg()
	mw.Write(make([]byte, 400<<10)) // frames go out as they fill; Close is never called
	if err := relayEnd.Write(frames); err != nil {
		t.Fatal(err)
	}
	select {
	case <-reading:
	case <-time.After(5 * time.Second):
		t.Fatal("the handler never started on the streamed body")
	}
	relayEnd.Close()
	select {
	case err := <-readErr:
		if err == nil {
			t.Fatal("the body read whole though its end never came")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the handler still waits for the rest of a body whose connection closed")
	}
	<-app.Done()
}

// An Async call's context has the call's deadline and no timer: it ends
// when the peer cancels the call (context.AfterFunc's function runs, Done
// closes, Err is Canceled) or the connection closes, and a function
// stopped before then never runs.
func TestAsyncContext(t *testing.T) {
	got := make(chan context.Context, 4)
	async := func(ctx context.Context, req *Request, answer func(*Response, error)) { got <- ctx }
	app, _ := Join(Options{}, Options{Async: async})
	defer app.Close()
	sent := time.Now()
	stopped := app.Go(2*time.Second, &Request{Service: "s", Method: "m"}, func(*Response, error) {})
	ctx := <-got
	if d, ok := ctx.Deadline(); !ok || d.Before(sent.Add(2*time.Second-100*time.Millisecond)) || d.After(time.Now().Add(2*time.Second)) {
		t.Fatalf("deadline %v, %v: want the ttl's, 2s after it was sent", d, ok)
	}
	ran := make(chan struct{}, 2)
	never := context.AfterFunc(ctx, func() { ran <- struct{}{} })
	if !never() {
		t.Fatal("stop did not stop a function not yet run")
	}
	late := context.AfterFunc(ctx, func() { ran <- struct{}{} })
	if ctx.Err() != nil {
		t.Fatalf("err %v before the call ended", ctx.Err())
	}
	app.Abandon(stopped, errors.New("given up")) // the peer's cancel
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the peer's cancel did not end the call's context")
	}
	select {
	case <-ran:
	case <-time.After(5 * time.Second):
		t.Fatal("context.AfterFunc's function did not run")
	}
	if ctx.Err() != context.Canceled {
		t.Fatalf("err %v, want Canceled", ctx.Err())
	}
	if late() {
		t.Fatal("stop said it stopped a function the cancel ran")
	}
	select {
	case <-ran:
		t.Fatal("a stopped function ran")
	case <-time.After(20 * time.Millisecond):
	}
	// Once ended, a new function runs at once.
	context.AfterFunc(ctx, func() { ran <- struct{}{} })
	<-ran

	// The connection's close ends the calls it has open.
	app.Go(time.Minute, &Request{Service: "s", Method: "m"}, func(*Response, error) {})
	ctx = <-got
	app.Close()
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the close did not end an open call's context")
	}
}
