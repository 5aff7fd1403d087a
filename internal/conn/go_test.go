package conn

import (
	"bytes"
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshrpc/mesh/frame"
)

// goCall makes a call with Go, abandons it after abandonAfter (0: never),
// and waits for its one answer; a second answer fails the test.
func goCall(t *testing.T, c *Conn, ttl, abandonAfter time.Duration, req *Request) (*Response, error) {
	t.Helper()
	type answer struct {
		res *Response
		err error
	}
	got := make(chan answer, 2)
	var n atomic.Int32
	id := c.Go(ttl, req, func(res *Response, err error) {
		n.Add(1)
		got <- answer{res, err}
	})
	if abandonAfter > 0 {
		time.AfterFunc(abandonAfter, func() { c.Abandon(id, frame.Errorf(frame.ErrCodeCancelled, "given up")) })
	}
	select {
	case a := <-got:
		time.Sleep(10 * time.Millisecond) // room for a second answer to show
		if n.Load() != 1 {
			t.Fatalf("answer was told %d times", n.Load())
		}
		return a.res, a.err
	case <-time.After(10 * time.Second):
		t.Fatal("Go never answered")
		return nil, nil
	}
}

// Go answers like Call, on a socket and joined: bodies of every size,
// application and transport errors, the peer's answer at the ttl, a call
// abandoned (the peer told to cancel), a ttl already spent, a closed
// connection.
func TestGo(t *testing.T) {
	stuck := make(chan struct{})
	cancelled := make(chan struct{}, 4)
	handler := func(ctx context.Context, req *Request) (*Response, error) {
		switch string(req.Method) {
		case "busy":
			return nil, frame.Errorf(frame.ErrCodeBusy, "busy")
		case "app":
			return &Response{Code: frame.ResAppError, Arg3: []byte("no")}, nil
		case "stuck":
			select {
			case <-ctx.Done():
				cancelled <- struct{}{}
			case <-stuck:
			}
			return nil, ctx.Err()
		}
		return echo(ctx, req)
	}
	socket, _ := pair(t, handler)
	joined, _ := Join(Options{}, Options{Handler: handler})
	defer joined.Close()
	defer close(stuck)
	for name, c := range map[string]*Conn{"socket": socket, "joined": joined} {
		t.Run(name, func(t *testing.T) {
			for _, size := range []int{0, 1000, 1 << 20} {
				body := bytes.Repeat([]byte{'g'}, size)
				res, err := goCall(t, c, 10*time.Second, 0, &Request{Service: "s", Method: "echo", Arg2: []byte("h"), Arg3: body})
				if err != nil || !bytes.Equal(res.Arg3, body) || string(res.Arg2) != "h" {
					t.Fatalf("%d bytes: %v", size, err)
				}
			}
			if _, err := goCall(t, c, time.Second, 0, &Request{Service: "s", Method: "busy"}); frame.CodeOf(err) != frame.ErrCodeBusy {
				t.Fatalf("busy: %v", err)
			}
			if res, err := goCall(t, c, time.Second, 0, &Request{Service: "s", Method: "app"}); err != nil || res.Code != frame.ResAppError {
				t.Fatalf("application error: %v", err)
			}
			if _, err := goCall(t, c, 50*time.Millisecond, 0, &Request{Service: "s", Method: "stuck"}); frame.CodeOf(err) != frame.ErrCodeTimeout {
				t.Fatalf("past its ttl: %v", err)
			}
			waitCancelled(t, cancelled)
			if _, err := goCall(t, c, 10*time.Second, 20*time.Millisecond, &Request{Service: "s", Method: "stuck"}); frame.CodeOf(err) != frame.ErrCodeCancelled {
				t.Fatalf("abandoned: %v", err)
			}
			waitCancelled(t, cancelled)
			if _, err := goCall(t, c, 0, 0, &Request{Service: "s", Method: "echo"}); frame.CodeOf(err) != frame.ErrCodeTimeout {
				t.Fatalf("no ttl left: %v", err)
			}
		})
	}
	socket.Close()
	if _, err := goCall(t, socket, time.Second, 0, &Request{Service: "s", Method: "echo"}); err == nil {
		t.Fatal("a closed connection answered")
	}
}

func waitCancelled(t *testing.T, cancelled chan struct{}) {
	t.Helper()
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("the handler was never told the call ended")
	}
}

// A call in flight when its connection closes is told so, once; abandoning
// it after that, or abandoning an unknown id, does nothing.
func TestGoConnectionCloses(t *testing.T) {
	c, _ := pair(t, func(ctx context.Context, req *Request) (*Response, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})
	got := make(chan error, 2)
	id := c.Go(time.Minute, &Request{Service: "s", Method: "wait"}, func(_ *Response, err error) { got <- err })
	time.Sleep(20 * time.Millisecond)
	c.Close()
	select {
	case err := <-got:
		if err == nil {
			t.Fatal("no error")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("never told")
	}
	c.Abandon(id, frame.Errorf(frame.ErrCodeCancelled, "late"))
	c.Abandon(12345, frame.Errorf(frame.ErrCodeCancelled, "unknown"))
	select {
	case err := <-got:
		t.Fatalf("told twice: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
}
