package grpcgate

import (
	"io"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/meshrpc/mesh/frame"
)

func TestProcedureAndPath(t *testing.T) {
	for _, tc := range []struct {
		path, procedure string
		ok              bool
	}{
		{"/test.Words/Echo", "test.Words::Echo", true},
		{"/a.b.C/D", "a.b.C::D", true},
		{"/noMethod", "", false},
		{"/svc/", "", false},
		{"//m", "", false},
		{"/a/b/c", "", false},
	} {
		got, ok := procedureOf(tc.path)
		if got != tc.procedure || ok != tc.ok {
			t.Errorf("procedureOf(%q) = %q, %v", tc.path, got, ok)
		}
		if tc.ok {
			if back, ok := pathOf(got); !ok || back != tc.path {
				t.Errorf("pathOf(%q) = %q, %v", got, back, ok)
			}
		}
	}
	for _, bad := range []string{"echo", "a::", "::b", "a/b::c"} {
		if p, ok := pathOf(bad); ok {
			t.Errorf("pathOf(%q) = %q, want refused", bad, p)
		}
	}
}

func TestServiceOf(t *testing.T) {
	for _, tc := range []struct {
		md   meta
		want string
	}{
		{metaOf("rpc-service", "words", ":authority", "other"), "words"},
		{metaOf(":authority", "words"), "words"},
		{metaOf(":authority", "words:443"), "words"},
		{metaOf(":authority", "127.0.0.1:21300"), ""},
		{metaOf(":authority", "[::1]:21300"), ""},
		{metaOf(":authority", "localhost:21300"), ""},
		{nil, ""},
	} {
		if got := serviceOf(tc.md); got != tc.want {
			t.Errorf("serviceOf(%v) = %q, want %q", tc.md, got, tc.want)
		}
	}
}

// Every gRPC status that has a TChannel error comes back as itself; the
// others have none (they travel as application errors).
func TestStatusMapping(t *testing.T) {
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		ec, ok := errCodeOf(c)
		if !ok {
			continue
		}
		if back := codeOf(ec); back != c {
			t.Errorf("%v → %v → %v", c, ec, back)
		}
	}
	for ec, want := range map[frame.ErrCode]codes.Code{frame.ErrCodeNetwork: codes.Unavailable, frame.ErrCodeProtocol: codes.Internal, 0x42: codes.Internal} {
		if got := codeOf(ec); got != want {
			t.Errorf("codeOf(%v) = %v, want %v", ec, got, want)
		}
	}
}

// Metadata becomes arg2 and comes back: repeated keys, binary values,
// trailers apart; what stays at the gateway never travels.
func TestHeadersRoundTrip(t *testing.T) {
	md := metaOf("x-a", "1", "x-bin", "\x00\xff", "rpc-service", "s", "x-a", "2", "mesh-token", "secret",
		"traceparent", "00-…", ":authority", "s", "grpc-timeout", "1S")
	arg2, err := arg2Of(md)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string][]string{}
	if err := frame.EachAppHeader(arg2, func(k, v []byte) bool { seen[string(k)] = append(seen[string(k)], string(v)); return true }); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 2 || len(seen["x-a"]) != 2 || seen["x-bin"][0] != "\x00\xff" {
		t.Fatalf("arg2 of %v: %v", md, seen)
	}
	list, _ := frame.AppendAppHeader(nil, "x-h", "h")
	list, _ = frame.AppendAppHeader(list, trailerPrefix+"x-t", "t")
	list, _ = frame.AppendAppHeader(list, headerErrorCode, "5")
	list, _ = frame.AppendAppHeader(list, headerErrorMessage, "gone")
	a, err := answerOf(list)
	if err != nil || a.header.get("x-h") != "h" || a.trailer.get("x-t") != "t" || a.code != "5" || a.message != "gone" {
		t.Fatalf("answerOf: %+v, %v", a, err)
	}
	if a.status().Error() != "rpc error: code = NotFound desc = gone" {
		t.Fatalf("the status: %v", a.status())
	}
	bad, _ := frame.AppendAppHeader(nil, "Has Space", "v")
	if _, err := answerOf(bad); err == nil {
		t.Fatal("a header no metadata key can hold was let through")
	}
	if _, err := answerOf([]byte{0, 2, 0, 1, 'k'}); err == nil {
		t.Fatal("a truncated list was read")
	}
}

func TestTracingOf(t *testing.T) {
	for _, tc := range []struct {
		md   meta
		want frame.Tracing
		high uint64
	}{
		{metaOf("traceparent", "00-5b8efff798038103d269b633813fc60c-eee19b7ec3c1b174-01"),
			frame.Tracing{TraceID: 0xd269b633813fc60c, SpanID: 0xeee19b7ec3c1b174, Flags: 1}, 0x5b8efff798038103},
		{metaOf("traceparent", "00-0000000000000000d269b633813fc60c-eee19b7ec3c1b174-00"),
			frame.Tracing{TraceID: 0xd269b633813fc60c, SpanID: 0xeee19b7ec3c1b174}, 0},
		{metaOf("traceparent", "00-00000000000000000000000000000000-eee19b7ec3c1b174-01"), frame.Tracing{}, 0},
		// A low half of zero cannot travel (TChannel reads it as no trace).
		{metaOf("traceparent", "00-5b8efff7980381030000000000000000-eee19b7ec3c1b174-01"), frame.Tracing{}, 0},
		{metaOf("traceparent", "garbage"), frame.Tracing{}, 0},
		{metaOf("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90"),
			frame.Tracing{TraceID: 0x64fe8b2a57d3eff7, SpanID: 0xe457b5a2e4d86bd1, ParentID: 0x05e3ac9a4f6e3b90, Flags: 1}, 0x80f198ee56343ba8},
		{metaOf("b3", "x0f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"), frame.Tracing{}, 0},
		{metaOf("x-b3-traceid", "463ac35c9f6413ad", "x-b3-spanid", "a2fb4a1d1a96d312", "x-b3-sampled", "0"),
			frame.Tracing{TraceID: 0x463ac35c9f6413ad, SpanID: 0xa2fb4a1d1a96d312}, 0},
		{metaOf("x-b3-traceid", "0000000000000001463ac35c9f6413ad", "x-b3-spanid", "a2fb4a1d1a96d312", "x-b3-sampled", "1"),
			frame.Tracing{TraceID: 0x463ac35c9f6413ad, SpanID: 0xa2fb4a1d1a96d312, Flags: 1}, 1},
	} {
		if got, high := tracingOf(tc.md); got != tc.want || high != tc.high {
			t.Errorf("tracingOf(%v) = %+v, %x; want %+v, %x", tc.md, got, high, tc.want, tc.high)
		}
	}
	// What a gRPC server is sent reads back the same, in both forms.
	for _, high := range []uint64{0, 0x5b8efff798038103} {
		var md meta
		traceMetadata(&md, frame.Tracing{TraceID: 0xd269b633813fc60c, SpanID: 0x1, Flags: 1}, high)
		for _, key := range []string{"traceparent", "b3"} {
			back, h := tracingOf(metaOf(key, md.get(key)))
			if back.TraceID != 0xd269b633813fc60c || h != high || back.SpanID != 1 || !back.Sampled() {
				t.Fatalf("%s %v read back as %+v, high %x", key, md.get(key), back, h)
			}
		}
	}
}

// IsHTTP2 peeks: what it saw is still there for the protocol that serves
// the connection; a cut preface is waited for; silence ends at the deadline.
func TestIsHTTP2(t *testing.T) {
	for _, tc := range []struct {
		name  string
		sends []string
		want  bool
	}{
		{"http2", []string{"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"}, true},
		{"tchannel init", []string{"\x00\x10\x01\x00\x00\x00\x00\x00"}, false},
		{"preface in pieces", []string{"P", "RI * HTTP/2.0"}, true},
		{"other", []string{"GET / HTTP/1.1\r\n"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			server, client := tcpPair(t)
			go func() {
				for _, s := range tc.sends {
					io.WriteString(client, s)
					time.Sleep(5 * time.Millisecond)
				}
			}()
			got, err := IsHTTP2(server, time.Now().Add(2*time.Second))
			if err != nil || got != tc.want {
				t.Fatalf("IsHTTP2 = %v, %v", got, err)
			}
			buf := make([]byte, len(tc.sends[0]))
			if _, err := io.ReadFull(server, buf); err != nil || string(buf) != tc.sends[0] {
				t.Fatalf("after the peek the connection reads %q, %v", buf, err)
			}
		})
	}
	server, _ := tcpPair(t)
	if _, err := IsHTTP2(server, time.Now().Add(50*time.Millisecond)); err == nil {
		t.Fatal("a silent connection was told apart")
	}
}

func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	client, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return server, client
}

// FuzzHeaders: any arg2 is read without panic, and what answerOf accepts
// is metadata gRPC can send.
func FuzzHeaders(f *testing.F) {
	list, _ := frame.AppendAppHeader(nil, "x-a", "1")
	list, _ = frame.AppendAppHeader(list, trailerPrefix+"x-t", "2")
	f.Add(list)
	f.Add([]byte{0, 1, 0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := answerOf(b)
		if err != nil {
			return
		}
		for _, md := range []meta{a.header, a.trailer} {
			for _, f := range md {
				if !validKey(f.Name) {
					t.Fatalf("key %q passed", f.Name)
				}
			}
		}
	})
}

// FuzzTracing: any trace context is read without panic, and one it accepts
// has a trace and a span.
func FuzzTracing(f *testing.F) {
	f.Add("00-5b8efff798038103d269b633813fc60c-eee19b7ec3c1b174-01", "")
	f.Add("", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1")
	f.Fuzz(func(t *testing.T, tp, b3 string) {
		got, high := tracingOf(metaOf("traceparent", tp, "b3", b3))
		if got != (frame.Tracing{}) && (got.TraceID == 0 || got.SpanID == 0) || got == (frame.Tracing{}) && high != 0 {
			t.Fatalf("%q %q → %+v, high %x", tp, b3, got, high)
		}
		// What it accepts, a gRPC server is sent as it came.
		var md meta
		traceMetadata(&md, got, high)
		if back, h := tracingOf(metaOf("traceparent", md.get("traceparent"))); back.TraceID != got.TraceID || h != high {
			t.Fatalf("%q %q → %+v, high %x → %q → %+v, %x", tp, b3, got, high, md.get("traceparent"), back, h)
		}
	})
}

// metaOf is metadata from key, value pairs.
func metaOf(kv ...string) meta {
	var md meta
	for i := 0; i+1 < len(kv); i += 2 {
		md.add(kv[i], kv[i+1])
	}
	return md
}
