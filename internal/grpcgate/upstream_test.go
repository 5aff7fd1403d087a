package grpcgate

import (
	"bytes"
	"context"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// stockServer is a grpc-go server that answers any method: "big:N" with N
// bytes, "sleep:D" after D, "code:N" with that status; anything else
// back, with the request's x-* metadata in its header and a trailer.
func stockServer(t *testing.T, addr string, opts ...grpc.ServerOption) (*grpc.Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	opts = append(opts, grpc.ForceServerCodecV2(RawCodec{}), grpc.MaxRecvMsgSize(8<<20), grpc.UnknownServiceHandler(func(_ any, ss grpc.ServerStream) error {
		var in []byte
		if err := ss.RecvMsg(&in); err != nil {
			return err
		}
		md, _ := metadata.FromIncomingContext(ss.Context())
		out := in
		s := string(in)
		switch {
		case strings.HasPrefix(s, "big:"):
			n, _ := strconv.Atoi(s[4:])
			out = bytes.Repeat([]byte{'b'}, n)
		case strings.HasPrefix(s, "sleep:"):
			d, _ := time.ParseDuration(s[6:])
			select {
			case <-time.After(d):
			case <-ss.Context().Done():
				return ss.Context().Err()
			}
		case strings.HasPrefix(s, "code:"):
			n, _ := strconv.Atoi(s[5:])
			return status.Error(codes.Code(n), "as asked")
		}
		ss.SetHeader(metadata.Pairs("x-got", strings.Join(md.Get("x-app"), ",")))
		ss.SetTrailer(metadata.Pairs("x-done", "yes"))
		return ss.SendMsg(&out)
	}))
	srv := grpc.NewServer(opts...)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return srv, ln.Addr().String()
}

// meshd's client side against a stock gRPC server: messages past every
// window both ways, metadata, trailers, statuses, deadlines, more calls
// than the server's stream limit, a message past meshd's limit.
func TestUpstream(t *testing.T) {
	_, addr := stockServer(t, "127.0.0.1:0", grpc.MaxConcurrentStreams(2))
	u := &upstream{addr: addr, maxMessage: 4 << 20}
	defer u.close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	md := metaOf("x-app", "1", "x-app", "2")
	for _, in := range [][]byte{[]byte("hi"), {}, bytes.Repeat([]byte{'r'}, 3<<20), []byte("big:3000000")} {
		r := u.call(ctx, "/test.Words/Echo", md, in)
		if r.status.Code() != codes.OK {
			t.Fatalf("%d bytes: %v", len(in), r.status.Err())
		}
		want := len(in)
		if bytes.HasPrefix(in, []byte("big:")) {
			want = 3000000
		}
		if len(r.message) != want || r.header.get("x-got") != "1,2" || r.trailer.get("x-done") != "yes" {
			t.Fatalf("%d bytes: got %d, header %v, trailer %v", len(in), len(r.message), r.header, r.trailer)
		}
	}
	for _, tc := range []struct {
		in   string
		code codes.Code
	}{
		{"code:5", codes.NotFound},
		{"code:14", codes.Unavailable},
		{"big:5000000", codes.ResourceExhausted}, // past meshd's 4 MiB
	} {
		if r := u.call(ctx, "/test.Words/Echo", nil, []byte(tc.in)); r.status.Code() != tc.code {
			t.Errorf("%s: %v, want %v", tc.in, r.status.Err(), tc.code)
		}
	}
	short, cancel2 := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel2()
	if r := u.call(short, "/test.Words/Echo", nil, []byte("sleep:2s")); r.status.Code() != codes.DeadlineExceeded {
		t.Errorf("past the deadline: %v", r.status.Err())
	}
	// Ten at once where the server takes two: the rest wait their turn.
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failed []error
	for i := range 10 {
		wg.Go(func() {
			if r := u.call(ctx, "/test.Words/Echo", nil, []byte("sleep:50ms")); r.status.Code() != codes.OK {
				mu.Lock()
				failed = append(failed, r.status.Err())
				mu.Unlock()
			}
			_ = i
		})
	}
	wg.Wait()
	if len(failed) > 0 {
		t.Fatalf("%d of 10 calls past the stream limit failed: %v", len(failed), failed[0])
	}
}

// A server that stops fails its calls as Unavailable (safe to retry
// elsewhere); once it is back, the next call dials it again.
func TestUpstreamRedials(t *testing.T) {
	srv, addr := stockServer(t, "127.0.0.1:0")
	u := &upstream{addr: addr, maxMessage: 4 << 20}
	defer u.close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if r := u.call(ctx, "/a.B/C", nil, []byte("x")); r.status.Code() != codes.OK {
		t.Fatal(r.status.Err())
	}
	srv.Stop()
	if r := u.call(ctx, "/a.B/C", nil, []byte("x")); r.status.Code() != codes.Unavailable {
		t.Fatalf("a stopped server: %v", r.status.Err())
	}
	stockServer(t, addr)
	deadline := time.Now().Add(5 * time.Second)
	for {
		r := u.call(ctx, "/a.B/C", nil, []byte("x"))
		if r.status.Code() == codes.OK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server back: %v", r.status.Err())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestEncodeTimeout(t *testing.T) {
	for _, d := range []time.Duration{1, time.Microsecond, 99999999, 100000000, time.Second, 3 * time.Hour, 1<<63 - 1, 0, -time.Second} {
		got, ok := parseTimeout(encodeTimeout(d))
		if !ok || got < d || (d > 0 && d < time.Hour && got-d > d/1000000+1) {
			t.Errorf("encodeTimeout(%v) = %q, read back as %v, %v", d, encodeTimeout(d), got, ok)
		}
	}
}

// FuzzUpstream has a gRPC server answer a call with any bytes after its
// settings: the call ends with a status, never hangs or panics, and the
// next call dials afresh.
func FuzzUpstream(f *testing.F) {
	var ok bytes.Buffer
	fr := http2.NewFramer(&ok, nil)
	fr.WriteSettings()
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hpackBlock(":status", "200", "content-type", "application/grpc"), EndHeaders: true})
	fr.WriteData(1, false, []byte{0, 0, 0, 0, 2, 'h', 'i'})
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hpackBlock("grpc-status", "0"), EndHeaders: true, EndStream: true})
	f.Add(ok.Bytes())
	f.Add(ok.Bytes()[:len(ok.Bytes())-3])
	var bad bytes.Buffer
	fr = http2.NewFramer(&bad, nil)
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hpackBlock(":status", "503"), EndHeaders: true, EndStream: true})
	fr.WriteGoAway(0, http2.ErrCodeEnhanceYourCalm, nil)
	fr.WriteRSTStream(1, http2.ErrCodeRefusedStream)
	fr.WriteWindowUpdate(0, 1<<31-1)
	f.Add(bad.Bytes())

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	defer ln.Close()
	answers := make(chan []byte, 1)
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer nc.Close()
				go io.Copy(io.Discard, nc)
				select {
				case b := <-answers:
					nc.Write(b)
					time.Sleep(20 * time.Millisecond)
				case <-time.After(time.Second):
				}
			}()
		}
	}()
	f.Fuzz(func(t *testing.T, answer []byte) {
		u := &upstream{addr: ln.Addr().String(), maxMessage: 1 << 20}
		defer u.close()
		answers <- answer
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		r := u.call(ctx, "/a.B/C", nil, []byte("x"))
		if r.status == nil {
			t.Fatal("no status")
		}
		if r.status.Code() == codes.OK && string(r.message) != "hi" && len(r.message) > 1<<20 {
			t.Fatalf("OK with %d bytes past the limit", len(r.message))
		}
	})
}

func hpackBlock(kv ...string) []byte {
	var b bytes.Buffer
	enc := hpack.NewEncoder(&b)
	for i := 0; i+1 < len(kv); i += 2 {
		enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	return b.Bytes()
}

// A server that overflows one stream's send window breaks that stream
// only: its call fails, the next call on the connection is answered.
func TestUpstreamStreamWindowOverflow(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		io.ReadFull(nc, make([]byte, len(http2.ClientPreface)))
		fr := http2.NewFramer(nc, nc)
		fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
		fr.WriteSettings()
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			h, ok := f.(*http2.MetaHeadersFrame)
			if !ok {
				continue
			}
			if h.StreamID == 1 {
				fr.WriteWindowUpdate(1, 1<<31-1) // past 2^31-1 with the initial 65535
				continue
			}
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: h.StreamID, BlockFragment: hpackBlock(":status", "200", "content-type", "application/grpc"), EndHeaders: true})
			fr.WriteData(h.StreamID, false, []byte{0, 0, 0, 0, 2, 'o', 'k'})
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: h.StreamID, BlockFragment: hpackBlock("grpc-status", "0"), EndHeaders: true, EndStream: true})
		}
	}()
	u := &upstream{addr: ln.Addr().String(), maxMessage: 1 << 20}
	defer u.close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if r := u.call(ctx, "/a.B/C", nil, []byte("x")); r.status.Code() != codes.Internal || !strings.Contains(r.status.Message(), "flow-control") {
		t.Fatalf("the overflowed stream's call: %v", r.status.Err())
	}
	if r := u.call(ctx, "/a.B/C", nil, []byte("x")); r.status.Code() != codes.OK || string(r.message) != "ok" {
		t.Fatalf("the next call on the connection: %v", r.status.Err())
	}
}
