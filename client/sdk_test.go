package client_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/meshrpc/mesh/client"
	"github.com/meshrpc/mesh/internal/testkit"
)

// An answer whose body does not decode is a local error (ErrEncoding), not
// a wire error: the call itself succeeded. So is a request that does not
// encode.
func TestJSONEncodingErrorsAreLocal(t *testing.T) {
	addr := serve("kv", "get", client.HandlerFunc(func(ctx context.Context, call *client.Call) (*client.Response, error) {
		return &client.Response{Body: []byte(`{"value": 7}`)}, nil
	}))
	c, err := client.Dial(context.Background(), addr, client.Options{Logger: testkit.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var out struct{ Value string }
	_, err = c.CallJSON(context.Background(), "kv", "get", nil, map[string]string{"key": "a"}, &out)
	var wire *client.Error
	if !errors.Is(err, client.ErrEncoding) || errors.As(err, &wire) {
		t.Fatalf("undecodable answer: %v (wire error: %v), want ErrEncoding and no *Error", err, wire)
	}
	_, err = c.CallJSON(context.Background(), "kv", "get", nil, func() {}, nil)
	if !errors.Is(err, client.ErrEncoding) || errors.As(err, &wire) {
		t.Fatalf("unencodable request: %v, want ErrEncoding and no *Error", err)
	}
}

// Advertise with no handler registered is an error, not a silent no-op.
func TestAdvertiseWithoutHandlers(t *testing.T) {
	srv := client.NewServer(client.Options{Logger: testkit.Quiet})
	if err := srv.Advertise(context.Background(), localMeshd()); !errors.Is(err, client.ErrNothingToAdvertise) {
		t.Fatalf("got %v, want ErrNothingToAdvertise", err)
	}
}

// With Options.Wait, Dial and Advertise keep trying until meshd is up;
// without it they fail at once.
func TestWaitForMeshd(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there yet
	if _, err := client.Dial(context.Background(), addr, client.Options{Logger: testkit.Quiet}); err == nil {
		t.Fatal("Dial without Wait succeeded with nothing listening")
	}
	go func() {
		time.Sleep(300 * time.Millisecond)
		srv := client.NewServer(client.Options{Logger: testkit.Quiet})
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Error(err)
			return
		}
		go srv.Serve(l)
		t.Cleanup(func() { srv.Shutdown(context.Background()) })
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	c, err := client.Dial(ctx, addr, client.Options{Wait: true, Logger: testkit.Quiet})
	if err != nil {
		t.Fatalf("Dial with Wait: %v", err)
	}
	c.Close()
	t.Logf("Dial with Wait connected %v after it started, once the peer listened", time.Since(start).Round(time.Millisecond))

	short, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel2()
	srv := client.NewServer(client.Options{Wait: true, Logger: testkit.Quiet})
	srv.Register("s", "m", client.HandlerFunc(func(ctx context.Context, call *client.Call) (*client.Response, error) { return &client.Response{}, nil }))
	if err := srv.Advertise(short, closedPort()); err == nil {
		t.Fatal("Advertise with Wait to nothing succeeded")
	}
}
