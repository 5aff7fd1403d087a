package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/uber/tchannel-go"
	tjson "github.com/uber/tchannel-go/json"
	"github.com/uber/tchannel-go/raw"

	"github.com/meshrpc/mesh/client"
	"github.com/meshrpc/mesh/frame"
)

// These tests pit mesh against tchannel-go v1.34.4, a TChannel implementation
// written by others, in both directions.

var bodySizes = []int{0, 1 << 10, 1 << 20, 10 << 20}

type echoReq struct {
	Text string `json:"text"`
	Pad  string `json:"pad,omitempty"`
}

// rawEcho is a tchannel-go raw handler.
type rawEcho struct{}

func (rawEcho) Handle(ctx context.Context, args *raw.Args) (*raw.Res, error) {
	switch args.Method {
	case "sleep":
		time.Sleep(500 * time.Millisecond)
	case "fail":
		return &raw.Res{IsErr: true, Arg3: []byte("it failed")}, nil
	}
	return &raw.Res{Arg2: args.Arg2, Arg3: args.Arg3}, nil
}
func (rawEcho) OnError(context.Context, error) {}

// startTChannelServer runs a tchannel-go server for service "tgo".
func startTChannelServer(t *testing.T, csum tchannel.ChecksumType) string {
	t.Helper()
	ch, err := tchannel.NewChannel("tgo", &tchannel.ChannelOptions{
		DefaultConnectionOptions: tchannel.ConnectionOptions{ChecksumType: csum},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"echo", "sleep", "fail"} {
		ch.Register(raw.Wrap(rawEcho{}), m)
	}
	err = tjson.Register(ch, tjson.Handlers{
		"jecho": func(ctx tjson.Context, in *echoReq) (*echoReq, error) {
			ctx.SetResponseHeaders(ctx.Headers())
			return in, nil
		},
		"jfail": func(ctx tjson.Context, in *echoReq) (*echoReq, error) {
			return nil, errors.New("json handler failed")
		},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.ListenAndServe("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ch.Close)
	return ch.PeerInfo().HostPort
}

func dial(t *testing.T, addr string, opts client.Options) *client.Client {
	t.Helper()
	c, err := client.Dial(context.Background(), addr, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ctxTimeout(d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	_ = cancel // released by the timer; tests are short-lived
	return ctx
}

func TestMeshClientCallsTChannelGoServer(t *testing.T) {
	for _, csum := range []frame.ChecksumType{frame.ChecksumNone, frame.ChecksumCRC32, frame.ChecksumCRC32C} {
		t.Run(csum.String(), func(t *testing.T) {
			addr := startTChannelServer(t, tchannel.ChecksumType(csum))
			c := dial(t, addr, client.Options{ServiceName: "meshtest", Checksum: csum, NoChecksum: csum == frame.ChecksumNone})
			for _, size := range bodySizes {
				body := bytes.Repeat([]byte("m"), size)
				res, err := c.Call(ctxTimeout(20*time.Second), "tgo", "echo", []byte("hdr"), body)
				if err != nil {
					t.Fatalf("raw %d bytes: %v", size, err)
				}
				if !bytes.Equal(res.Body, body) || string(res.Headers) != "hdr" {
					t.Fatalf("raw %d bytes: echoed %d bytes, headers %q", size, len(res.Body), res.Headers)
				}
				in := echoReq{Text: "hi", Pad: string(body)}
				var out echoReq
				hdrs, err := c.CallJSON(ctxTimeout(20*time.Second), "tgo", "jecho", map[string]string{"k": "v"}, in, &out)
				if err != nil {
					t.Fatalf("json %d bytes: %v", size, err)
				}
				if out != in || hdrs["k"] != "v" {
					t.Fatalf("json %d bytes: got %d-byte pad, headers %v", size, len(out.Pad), hdrs)
				}
			}
		})
	}
}

func TestMeshClientSeesTChannelGoErrors(t *testing.T) {
	addr := startTChannelServer(t, tchannel.ChecksumTypeCrc32)
	c := dial(t, addr, client.Options{})
	if err := c.Ping(ctxTimeout(time.Second)); err != nil {
		t.Fatalf("ping: %v", err)
	}
	_, err := c.Call(ctxTimeout(time.Second), "tgo", "nosuchmethod", nil, nil)
	if frame.CodeOf(err) != frame.ErrCodeBadRequest {
		t.Fatalf("unknown method: %v, want bad request", err)
	}
	_, err = c.Call(ctxTimeout(time.Second), "nosuchservice", "echo", nil, nil)
	if frame.CodeOf(err) != frame.ErrCodeBadRequest {
		t.Fatalf("unknown service: %v, want bad request", err)
	}
	start := time.Now()
	_, err = c.Call(ctxTimeout(100*time.Millisecond), "tgo", "sleep", nil, nil)
	if frame.CodeOf(err) != frame.ErrCodeTimeout || time.Since(start) > 400*time.Millisecond {
		t.Fatalf("call past its TTL: %v after %v", err, time.Since(start))
	}
	var ae *client.ApplicationError
	if _, err = c.Call(ctxTimeout(time.Second), "tgo", "fail", nil, nil); !errors.As(err, &ae) || string(ae.Body) != "it failed" {
		t.Fatalf("raw application error: %v", err)
	}
	if _, err = c.CallJSON(ctxTimeout(time.Second), "tgo", "jfail", nil, echoReq{}, nil); !errors.As(err, &ae) || ae.Message != "json handler failed" {
		t.Fatalf("json application error: %v", err)
	}
}

// startMeshServer runs a mesh server for service "mesh".
func startMeshServer(t *testing.T) string {
	t.Helper()
	s := client.NewServer(client.Options{})
	s.Register("mesh", "echo", client.HandlerFunc(func(ctx context.Context, call *client.Call) (*client.Response, error) {
		return &client.Response{Headers: call.Headers, Body: call.Body}, nil
	}))
	s.Register("mesh", "sleep", client.HandlerFunc(func(ctx context.Context, call *client.Call) (*client.Response, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}))
	s.Register("mesh", "fail", client.HandlerFunc(func(ctx context.Context, call *client.Call) (*client.Response, error) {
		return nil, &client.ApplicationError{Body: []byte("it failed")}
	}))
	s.Register("mesh", "jecho", client.JSON(func(ctx context.Context, h map[string]string, in echoReq) (echoReq, error) {
		return in, nil
	}))
	s.Register("mesh", "jfail", client.JSON(func(ctx context.Context, h map[string]string, in echoReq) (echoReq, error) {
		return echoReq{}, fmt.Errorf("mesh json handler failed")
	}))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(l)
	t.Cleanup(func() { s.Shutdown(ctxTimeout(time.Second)) })
	return l.Addr().String()
}

func newTChannelClient(t *testing.T, csum tchannel.ChecksumType) *tchannel.Channel {
	t.Helper()
	ch, err := tchannel.NewChannel("tgo-client", &tchannel.ChannelOptions{
		DefaultConnectionOptions: tchannel.ConnectionOptions{ChecksumType: csum},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ch.Close)
	return ch
}

func TestTChannelGoClientCallsMeshServer(t *testing.T) {
	addr := startMeshServer(t)
	// tchannel-go cannot send unchecksummed calls: it turns "none" into crc32.
	for _, csum := range []tchannel.ChecksumType{tchannel.ChecksumTypeCrc32, tchannel.ChecksumTypeCrc32C} {
		t.Run(frame.ChecksumType(csum).String(), func(t *testing.T) {
			ch := newTChannelClient(t, csum)
			for _, size := range bodySizes {
				body := bytes.Repeat([]byte("t"), size)
				arg2, arg3, _, err := raw.Call(ctxTimeout(20*time.Second), ch, addr, "mesh", "echo", []byte("hdr"), body)
				if err != nil {
					t.Fatalf("raw %d bytes: %v", size, err)
				}
				if !bytes.Equal(arg3, body) || string(arg2) != "hdr" {
					t.Fatalf("raw %d bytes: echoed %d bytes, arg2 %q", size, len(arg3), arg2)
				}
				in := echoReq{Text: "hi", Pad: string(body)}
				var out echoReq
				jc := tjson.NewClient(ch, "mesh", &tjson.ClientOptions{HostPort: addr})
				ctx, cancel := tjson.NewContext(20 * time.Second)
				err = jc.Call(ctx, "jecho", &in, &out)
				cancel()
				if err != nil {
					t.Fatalf("json %d bytes: %v", size, err)
				}
				if out != in {
					t.Fatalf("json %d bytes: got %d-byte pad", size, len(out.Pad))
				}
			}
		})
	}
}

func TestTChannelGoClientSeesMeshErrors(t *testing.T) {
	addr := startMeshServer(t)
	ch := newTChannelClient(t, tchannel.ChecksumTypeCrc32)
	if err := ch.Ping(ctxTimeout(time.Second), addr); err != nil {
		t.Fatalf("ping: %v", err)
	}
	for _, target := range [][2]string{{"mesh", "nosuchmethod"}, {"nosuchservice", "echo"}} {
		_, _, _, err := raw.Call(ctxTimeout(time.Second), ch, addr, target[0], target[1], nil, nil)
		if tchannel.GetSystemErrorCode(err) != tchannel.ErrCodeBadRequest {
			t.Fatalf("%v: %v, want bad request", target, err)
		}
	}
	start := time.Now()
	_, _, _, err := raw.Call(ctxTimeout(100*time.Millisecond), ch, addr, "mesh", "sleep", nil, nil)
	if tchannel.GetSystemErrorCode(err) != tchannel.ErrCodeTimeout || time.Since(start) > 400*time.Millisecond {
		t.Fatalf("call past its TTL: %v after %v", err, time.Since(start))
	}
	_, arg3, res, err := raw.Call(ctxTimeout(time.Second), ch, addr, "mesh", "fail", nil, nil)
	if err != nil || !res.ApplicationError() || string(arg3) != "it failed" {
		t.Fatalf("raw application error: %v %q", err, arg3)
	}
	jc := tjson.NewClient(ch, "mesh", &tjson.ClientOptions{HostPort: addr})
	ctx, cancel := tjson.NewContext(time.Second)
	defer cancel()
	var out echoReq
	err = jc.Call(ctx, "jfail", &echoReq{}, &out)
	var ae tjson.ErrApplication
	if !errors.As(err, &ae) || ae["message"] != "mesh json handler failed" {
		t.Fatalf("json application error: %#v", err)
	}
}
