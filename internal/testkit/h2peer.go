package testkit

import (
	"bytes"
	"io"
	"net"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// H2Peer speaks HTTP/2 on purpose badly, on its own connection: the
// hostile peer of the gRPC tests. What the far end sends is read and
// dropped, so only what the peer sends is the attack.
type H2Peer struct {
	net.Conn
	*http2.Framer
}

// DialH2 connects to addr and sends HTTP/2's preface and an empty SETTINGS.
func DialH2(t testing.TB, addr string) *H2Peer {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	io.WriteString(nc, http2.ClientPreface)
	fr := http2.NewFramer(nc, nc)
	fr.WriteSettings()
	go io.Copy(io.Discard, nc)
	return &H2Peer{Conn: nc, Framer: fr}
}

// GRPCHeaders is the HEADERS block of a gRPC call to /test.Words/Echo of
// mesh service words, with extra metadata pairs.
func GRPCHeaders(extra ...string) []byte {
	var b bytes.Buffer
	enc := hpack.NewEncoder(&b)
	enc.SetMaxDynamicTableSizeLimit(0)
	for _, kv := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", "/test.Words/Echo"}, {":authority", "words"},
		{"content-type", "application/grpc"}, {"te", "trailers"}, {"rpc-service", "words"}} {
		enc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]})
	}
	for i := 0; i+1 < len(extra); i += 2 {
		enc.WriteField(hpack.HeaderField{Name: extra[i], Value: extra[i+1]})
	}
	return b.Bytes()
}

// GRPCMessage frames body as gRPC's length-prefixed message.
func GRPCMessage(body []byte) []byte {
	m := []byte{0, byte(len(body) >> 24), byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))}
	return append(m, body...)
}

// GRPCText is a gRPC message holding a google.protobuf.StringValue of s.
func GRPCText(s string) []byte {
	b, _ := proto.Marshal(wrapperspb.String(s))
	return GRPCMessage(b)
}
