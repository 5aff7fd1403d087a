package conn

import (
	"bytes"
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshrpc/mesh/frame"
)

// goCall makes a call with Go and waits for its one answer; a second
// answer fails the test.
func goCall(t *testing.T, c *Conn, ctx context.Context, req *Request) (*Response, error) {
	t.Helper()
	type answer struct {
		res *Response
		err error
	}
	got := make(chan answer, 2)
	var n atomic.Int32
	c.Go(ctx, req, func(res *Response, err error) {
		n.Add(1)
		got <- answer{res, err}
	})
	select {
	case a := <-got:
		time.Sleep(10 * time.Millisecond) // room for a second answer to show
		if n.Load() != 1 {
			t.Fatalf("done was told %d times", n.Load())
		}
		return a.res, a.err
	case <-time.After(10 * time.Second):
		t.Fatal("Go never answered")
		return nil, nil
	}
}

// Go answers like Call, on a socket and joined: bodies of every size,
// application and transport errors, a deadline (the peer told to cancel),
// a cancel, a context that ended before the call, a closed connection.
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
			bg := context.Background()
			ctx, cancel := context.WithTimeout(bg, 10*time.Second)
			defer cancel()
			for _, size := range []int{0, 1000, 1 << 20} {
				body := bytes.Repeat([]byte{'g'}, size)
				res, err := goCall(t, c, ctx, &Request{Service: "s", Method: "echo", Arg2: []byte("h"), Arg3: body})
				if err != nil || !bytes.Equal(res.Arg3, body) || string(res.Arg2) != "h" {
					t.Fatalf("%d bytes: %v", size, err)
				}
			}
			if _, err := goCall(t, c, ctx, &Request{Service: "s", Method: "busy"}); frame.CodeOf(err) != frame.ErrCodeBusy {
				t.Fatalf("busy: %v", err)
			}
			if res, err := goCall(t, c, ctx, &Request{Service: "s", Method: "app"}); err != nil || res.Code != frame.ResAppError {
				t.Fatalf("application error: %v", err)
			}
			short, cancelShort := context.WithTimeout(bg, 50*time.Millisecond)
			defer cancelShort()
			if _, err := goCall(t, c, short, &Request{Service: "s", Method: "stuck"}); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("past its deadline: %v", err)
			}
			waitCancelled(t, cancelled)
			cctx, cancelNow := context.WithCancel(bg)
			time.AfterFunc(20*time.Millisecond, cancelNow)
			if _, err := goCall(t, c, cctx, &Request{Service: "s", Method: "stuck"}); frame.CodeOf(err) != frame.ErrCodeCancelled {
				t.Fatalf("cancelled: %v", err)
			}
			waitCancelled(t, cancelled)
			if _, err := goCall(t, c, cctx, &Request{Service: "s", Method: "echo"}); frame.CodeOf(err) != frame.ErrCodeCancelled {
				t.Fatalf("a context ended before the call: %v", err)
			}
			if _, err := goCall(t, c, bg, &Request{Service: "s", Method: "echo", Arg3: []byte("x")}); err != nil {
				t.Fatalf("no deadline (the default one): %v", err)
			}
		})
	}
	socket.Close()
	if _, err := goCall(t, socket, context.Background(), &Request{Service: "s", Method: "echo"}); err == nil {
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

// A call in flight when its connection closes is told so, once.
func TestGoConnectionCloses(t *testing.T) {
	c, _ := pair(t, func(ctx context.Context, req *Request) (*Response, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})
	got := make(chan error, 2)
	c.Go(context.Background(), &Request{Service: "s", Method: "wait"}, func(_ *Response, err error) { got <- err })
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
	select {
	case err := <-got:
		t.Fatalf("told twice: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
}
