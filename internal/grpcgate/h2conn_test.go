package grpcgate

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/meshrpc/mesh/internal/conn"
	"github.com/meshrpc/mesh/internal/testkit"
)

// echoMesh is a meshd that answers every call itself: the message back, or
// for a message "big:N", N bytes; metadata x-* back as header metadata.
type echoMesh struct{}

func (echoMesh) Attach(app conn.Options, _ string) (ours, theirs *conn.Conn) {
	return conn.Join(app, conn.Options{Logger: testkit.Quiet, Handler: func(ctx context.Context, req *conn.Request) (*conn.Response, error) {
		body := req.Arg3
		if n, ok := strings.CutPrefix(string(body), "big:"); ok {
			size, _ := strconv.Atoi(n)
			body = bytes.Repeat([]byte{'b'}, size)
		}
		return &conn.Response{Arg2: req.Arg2, Arg3: body}, nil
	}})
}

func (echoMesh) Prove(context.Context, net.Conn, string, string) error { return nil }
func (echoMesh) Serve(context.Context, *conn.Conn, string, map[string]string) error {
	return errors.New("not here")
}
func (echoMesh) Withdraw(context.Context, *conn.Conn) error { return nil }

// gateway serves a gateway with limits on a loopback listener.
func gateway(t *testing.T, l Limits) (*Gateway, string) {
	t.Helper()
	g := NewGateway(echoMesh{}, l, testkit.Quiet)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			g.Serve(nc, nil)
		}
	}()
	t.Cleanup(func() { ln.Close(); g.Close() })
	return g, ln.Addr().String()
}

// h2client is a raw HTTP/2 client that reads what the gateway answers.
type h2client struct {
	nc   net.Conn
	fr   *http2.Framer
	held map[uint32][]http2.Frame // read while waiting for another stream's
}

func dialRaw(t *testing.T, addr string, settings ...http2.Setting) *h2client {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.Write([]byte(http2.ClientPreface))
	fr := http2.NewFramer(nc, nc)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	fr.WriteSettings(settings...)
	return &h2client{nc: nc, fr: fr, held: map[uint32][]http2.Frame{}}
}

// next is the next frame on a stream (or the connection's GOAWAY, or a
// closed connection: nil), past settings, pings and window updates.
func (c *h2client) next(t *testing.T, id uint32) http2.Frame {
	t.Helper()
	if held := c.held[id]; len(held) > 0 {
		c.held[id] = held[1:]
		return held[0]
	}
	c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			return nil
		}
		if _, ok := f.(*http2.GoAwayFrame); ok || f.Header().StreamID == id && id != 0 {
			return f
		}
		if _, data := f.(*http2.DataFrame); !data && f.Header().StreamID != 0 {
			c.held[f.Header().StreamID] = append(c.held[f.Header().StreamID], f) // a DATA frame's bytes last until the next read
		}
	}
}

// status is a stream's grpc-status and grpc-message, from its last
// headers.
func (c *h2client) status(t *testing.T, id uint32) (codes.Code, string, []http2.Frame) {
	t.Helper()
	var seen []http2.Frame
	for {
		f := c.next(t, id)
		if f == nil {
			t.Fatalf("stream %d: no status; saw %v", id, seen)
		}
		seen = append(seen, f)
		h, ok := f.(*http2.MetaHeadersFrame)
		if !ok {
			continue
		}
		if n := h.PseudoValue("status"); n != "" && n != "200" {
			t.Fatalf("stream %d: HTTP status %q", id, n)
		}
		if h.StreamEnded() {
			code, _ := strconv.Atoi(valueOf(h, "grpc-status"))
			return codes.Code(code), valueOf(h, "grpc-message"), seen
		}
	}
}

func valueOf(h *http2.MetaHeadersFrame, k string) string {
	for _, f := range h.RegularFields() {
		if f.Name == k {
			return f.Value
		}
	}
	return ""
}

// The gateway's HTTP/2 side refuses what is not a unary gRPC call it can
// take, each stream on its own, with a status that says why; the
// connection goes on serving.
func TestH2Refusals(t *testing.T) {
	_, addr := gateway(t, Limits{MaxMessage: 1000, MaxHeaderList: 2000})
	msg := testkit.GRPCText("hi")
	for _, tc := range []struct {
		name    string
		headers []byte
		data    [][]byte // each its own DATA frame; the last ends the stream
		code    codes.Code
		says    string
	}{
		{"no service", hdrs(":authority", "127.0.0.1", "rpc-service", ""), [][]byte{msg}, codes.InvalidArgument, "rpc-service"},
		{"not a method path", hdrs(":path", "/nope"), [][]byte{msg}, codes.Unimplemented, "/pkg.Service/Method"},
		{"not gRPC", hdrs("content-type", "application/json"), [][]byte{msg}, codes.InvalidArgument, "not a gRPC call"},
		{"no message", hdrs(), nil, codes.InvalidArgument, "no request message"},
		{"a message cut short", hdrs(), [][]byte{msg[:len(msg)-1]}, codes.InvalidArgument, "ended after"},
		{"compressed", hdrs("grpc-encoding", "gzip"), [][]byte{append([]byte{1}, msg[1:]...)}, codes.Unimplemented, "compressed"},
		{"too big", hdrs(), [][]byte{testkit.GRPCMessage(make([]byte, 1001))}, codes.ResourceExhausted, "more than the 1000"},
		{"too big, the prefix split", hdrs(), [][]byte{{0, 0}, {0, 0x10, 0}}, codes.ResourceExhausted, "4096 bytes"},
		{"two messages", hdrs(), [][]byte{msg, msg}, codes.Unimplemented, "unary calls only"},
		{"a bad timeout", hdrs("grpc-timeout", "soon"), [][]byte{msg}, codes.InvalidArgument, "grpc-timeout"},
		{"binary metadata not base64", hdrs("x-id-bin", "!!"), [][]byte{msg}, codes.InvalidArgument, "base64"},
		{"metadata past the limit", hdrs("x-a", strings.Repeat("a", 1500), "x-b", strings.Repeat("b", 1500)), [][]byte{msg}, codes.ResourceExhausted, "metadata exceeds 2000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, addr)
			c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: tc.headers, EndHeaders: true, EndStream: len(tc.data) == 0})
			for i, d := range tc.data {
				c.fr.WriteData(1, i == len(tc.data)-1, d)
			}
			code, says, _ := c.status(t, 1)
			if code != tc.code || !strings.Contains(says, tc.says) {
				t.Fatalf("got %v %q, want %v saying %q", code, says, tc.code, tc.says)
			}
			// The connection still serves a good call.
			c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: hdrs(), EndHeaders: true})
			c.fr.WriteData(3, true, msg)
			if code, says, _ := c.status(t, 3); code != codes.OK {
				t.Fatalf("the next call: %v %q", code, says)
			}
		})
	}
}

// hdrs is a call's header block with fields replaced or added.
func hdrs(kv ...string) []byte {
	fields := [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", "/test.Words/Echo"}, {":authority", "words"},
		{"content-type", "application/grpc"}, {"te", "trailers"}, {"rpc-service", "words"}}
next:
	for i := 0; i+1 < len(kv); i += 2 {
		for j := range fields {
			if fields[j][0] == kv[i] {
				fields[j][1] = kv[i+1]
				continue next
			}
		}
		fields = append(fields, [2]string{kv[i], kv[i+1]})
	}
	var b bytes.Buffer
	enc := hpack.NewEncoder(&b)
	for _, f := range fields {
		if f[1] != "" {
			enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
	}
	return b.Bytes()
}

// What breaks HTTP/2 itself ends the connection with a GOAWAY that says
// why.
func TestH2ConnectionErrors(t *testing.T) {
	_, addr := gateway(t, Limits{PingInterval: time.Hour})
	for _, tc := range []struct {
		name string
		send func(c *h2client)
		code http2.ErrCode
	}{
		{"an even stream id", func(c *h2client) {
			c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 2, BlockFragment: hdrs(), EndHeaders: true})
		}, http2.ErrCodeProtocol},
		{"a stream id going back", func(c *h2client) {
			c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 5, BlockFragment: hdrs(), EndHeaders: true})
			c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: hdrs(), EndHeaders: true})
		}, http2.ErrCodeProtocol},
		{"data on a stream never opened", func(c *h2client) { c.fr.WriteData(9, true, []byte("x")) }, http2.ErrCodeProtocol},
		{"a frame past 16 KiB", func(c *h2client) {
			c.fr.WriteRawFrame(http2.FrameData, 0, 1, make([]byte, 20000))
		}, http2.ErrCodeFrameSize},
		{"pings, many and soon", func(c *h2client) {
			for range 10 {
				c.fr.WritePing(false, [8]byte{})
			}
		}, http2.ErrCodeEnhanceYourCalm},
		{"one metadata value past the whole limit", func(c *h2client) {
			c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hdrs("x-big", strings.Repeat("a", 20000)), EndHeaders: true})
		}, http2.ErrCodeCompression},
		{"a push promise", func(c *h2client) {
			c.fr.WritePushPromise(http2.PushPromiseParam{StreamID: 1, PromiseID: 2, BlockFragment: hdrs(), EndHeaders: true})
		}, http2.ErrCodeProtocol},
		{"a window past 2^31-1", func(c *h2client) {
			c.fr.WriteWindowUpdate(0, 1<<31-1)
		}, http2.ErrCodeFlowControl},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, addr)
			tc.send(c)
			f := c.next(t, 0)
			g, ok := f.(*http2.GoAwayFrame)
			if !ok || g.ErrCode != tc.code {
				t.Fatalf("got %v, want GOAWAY %v", f, tc.code)
			}
		})
	}
	// A connection whose first frame is not SETTINGS.
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.Write([]byte(http2.ClientPreface))
	fr := http2.NewFramer(nc, nc)
	fr.WritePing(false, [8]byte{})
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("no GOAWAY before the close: %v", err)
		}
		if g, ok := f.(*http2.GoAwayFrame); ok {
			if g.ErrCode != http2.ErrCodeProtocol {
				t.Fatalf("GOAWAY %v", g.ErrCode)
			}
			break
		}
	}
}

// Streams past MaxStreams are refused (REFUSED_STREAM) while the others
// go on; one that ends makes room.
func TestH2MaxStreams(t *testing.T) {
	_, addr := gateway(t, Limits{MaxStreams: 3})
	c := dialRaw(t, addr)
	for id := uint32(1); id <= 7; id += 2 { // four open, none sent its message yet
		c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hdrs(), EndHeaders: true})
	}
	if f, ok := c.next(t, 7).(*http2.RSTStreamFrame); !ok || f.ErrCode != http2.ErrCodeRefusedStream {
		t.Fatalf("the fourth stream: %v", f)
	}
	c.fr.WriteData(1, true, testkit.GRPCText("one"))
	if code, _, _ := c.status(t, 1); code != codes.OK {
		t.Fatalf("stream 1: %v", code)
	}
	c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 9, BlockFragment: hdrs(), EndHeaders: true})
	c.fr.WriteData(9, true, testkit.GRPCText("nine"))
	if code, _, _ := c.status(t, 9); code != codes.OK {
		t.Fatalf("stream 9, after stream 1 ended: %v", code)
	}
}

// An answer larger than the client's windows goes out as they open, in
// order, with its trailers last; a stream whose client opens no window
// holds up no other.
func TestH2AnswerWaitsForTheWindow(t *testing.T) {
	_, addr := gateway(t, Limits{})
	c := dialRaw(t, addr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1000})
	c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hdrs(), EndHeaders: true})
	c.fr.WriteData(1, true, testkit.GRPCMessage([]byte("big:100000")))
	// The connection's window (64 KiB) outlasts the stream's: open both by
	// 1000 bytes each time the stream's is used up. Once it first is, a
	// second call is answered while the first waits.
	got, allowed := 0, 1000
	for got < 5+100000 {
		if got == allowed {
			if allowed == 1000 {
				c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: hdrs(), EndHeaders: true})
				c.fr.WriteData(3, true, testkit.GRPCMessage([]byte("big:500")))
				if code, _, _ := c.status(t, 3); code != codes.OK {
					t.Fatalf("the small answer: %v", code)
				}
			}
			c.fr.WriteWindowUpdate(1, 1000)
			c.fr.WriteWindowUpdate(0, 1000)
			allowed += 1000
		}
		switch f := c.next(t, 1).(type) {
		case *http2.MetaHeadersFrame:
			if f.StreamEnded() {
				t.Fatalf("trailers after %d bytes", got)
			}
		case *http2.DataFrame:
			if got += len(f.Data()); got > allowed {
				t.Fatalf("%d bytes past a window of %d", got, allowed)
			}
		default:
			t.Fatalf("after %d bytes: %v", got, f)
		}
	}
	if code, _, _ := c.status(t, 1); code != codes.OK {
		t.Fatalf("the large answer: %v", code)
	}
}

// A stock gRPC client: a large answer (past its windows), binary and
// repeated metadata, a deadline, all through the gateway.
func TestH2StockClient(t *testing.T) {
	_, addr := gateway(t, Limits{})
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "rpc-service", "words", "x-id-bin", "\x00\xff\x01", "x-app", "1", "x-app", "2")
	for _, size := range []int{0, 1, 70000, 3 << 20} {
		in := []byte("big:" + strconv.Itoa(size))
		var out []byte
		var hdr metadata.MD
		if err := cc.Invoke(ctx, "/test.Words/Echo", &in, &out, grpc.ForceCodecV2(RawCodec{}), grpc.Header(&hdr), grpc.MaxCallRecvMsgSize(4<<20)); err != nil {
			t.Fatalf("%d bytes: %v", size, err)
		}
		if len(out) != size || (size > 0 && out[size-1] != 'b') {
			t.Fatalf("%d bytes: got %d", size, len(out))
		}
		if got := hdr.Get("x-id-bin"); len(got) != 1 || got[0] != "\x00\xff\x01" || strings.Join(hdr.Get("x-app"), ",") != "1,2" {
			t.Fatalf("header metadata %v", hdr)
		}
	}
	short, cancel2 := context.WithTimeout(ctx, time.Nanosecond)
	defer cancel2()
	var out []byte
	in := []byte("x")
	if err := cc.Invoke(short, "/test.Words/Echo", &in, &out, grpc.ForceCodecV2(RawCodec{})); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("past its deadline: %v", err)
	}
}

// A connection with no call for IdleTimeout is sent GOAWAY and closed,
// whether it never called or its last call ended; one with a call open
// stays.
func TestH2IdleTimeout(t *testing.T) {
	_, addr := gateway(t, Limits{IdleTimeout: 200 * time.Millisecond})
	never := dialRaw(t, addr)
	busy := dialRaw(t, addr)
	busy.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hdrs(), EndHeaders: true}) // its message never comes
	done := dialRaw(t, addr)
	done.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hdrs(), EndHeaders: true})
	done.fr.WriteData(1, true, testkit.GRPCText("x"))
	if code, _, _ := done.status(t, 1); code != codes.OK {
		t.Fatalf("the call: %v", code)
	}
	for name, c := range map[string]*h2client{"never called": never, "called": done} {
		if g, ok := c.next(t, 0).(*http2.GoAwayFrame); !ok || g.ErrCode != http2.ErrCodeNo {
			t.Fatalf("%s: %v, want GOAWAY NO_ERROR", name, g)
		}
	}
	busy.nc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	for {
		f, err := busy.fr.ReadFrame()
		if err != nil {
			if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
				t.Fatalf("the connection with a call open: %v", err)
			}
			break
		}
		if _, ok := f.(*http2.GoAwayFrame); ok {
			t.Fatal("GOAWAY with a call open")
		}
	}
}

func TestParseTimeout(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"1S", time.Second, true},
		{"250m", 250 * time.Millisecond, true},
		{"3H", 3 * time.Hour, true},
		{"7M", 7 * time.Minute, true},
		{"10u", 10 * time.Microsecond, true},
		{"99999999n", 99999999, true},
		{"0m", time.Nanosecond, true},
		{"99999999H", 1<<63 - 1, true},
		{"123456789S", 0, false},
		{"S", 0, false},
		{"1s", 0, false},
		{"-1S", 0, false},
		{"1.5S", 0, false},
	} {
		got, ok := parseTimeout(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseTimeout(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestPercentEncode(t *testing.T) {
	for in, want := range map[string]string{
		"plain text":     "plain text",
		"100%":           "100%25",
		"line\nbreak":    "line%0Abreak",
		"naïve":          "na%C3%AFve",
		"":               "",
		"\x00\x7f\x80~ ": "%00%7F%80~ ",
	} {
		if got := percentEncode(in); got != want {
			t.Errorf("percentEncode(%q) = %q, want %q", in, got, want)
		}
	}
}

// Frames the gateway writes read back as what they say.
func TestFramesReadBack(t *testing.T) {
	var b []byte
	b = appendSettings(b, http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 7})
	b = appendWindowUpdate(b, 3, 99)
	b = appendRSTStream(b, 5, http2.ErrCodeCancel)
	b = appendData(b, 7, 10, []byte("hhhhh"), bytes.Repeat([]byte{'d'}, 20), true) // a prefix and a body: 10+10+5
	big := strings.Repeat("v", 50)
	b = appendHeaders(b, 9, 16, true, []hpack.HeaderField{{Name: "x-long", Value: big}})
	fr := http2.NewFramer(nil, bytes.NewReader(b))
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	var data []int
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			break
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if v, _ := f.Value(http2.SettingMaxConcurrentStreams); v != 7 {
				t.Errorf("settings: %v", f)
			}
		case *http2.WindowUpdateFrame:
			if f.StreamID != 3 || f.Increment != 99 {
				t.Errorf("window update: %v", f)
			}
		case *http2.RSTStreamFrame:
			if f.StreamID != 5 || f.ErrCode != http2.ErrCodeCancel {
				t.Errorf("reset: %v", f)
			}
		case *http2.DataFrame:
			data = append(data, len(f.Data()))
			if len(data) == 1 && string(f.Data()) != "hhhhhddddd" {
				t.Errorf("the first data frame: %q", f.Data())
			}
			if f.StreamEnded() != (len(data) == 3) {
				t.Errorf("data frame %d ends the stream: %v", len(data), f.StreamEnded())
			}
		case *http2.MetaHeadersFrame:
			if valueOf(f, "x-long") != big || !f.StreamEnded() {
				t.Errorf("headers across continuations: %v", f.Fields)
			}
			if binary.BigEndian.Uint32(b[5:9]) != 0 {
				t.Error("settings on a stream")
			}
			return
		}
	}
	t.Fatalf("the header block never read back whole; data frames %v", data)
}
