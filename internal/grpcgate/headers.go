package grpcgate

import (
	"cmp"
	"fmt"
	"strings"

	"github.com/meshrpc/mesh/frame"
)

// Application headers (arg2) with a meaning of their own. The error ones
// are YARPC's names for a status that has no TChannel error code.
const (
	headerErrorCode    = "$rpc$-error-code"    // the gRPC status code, in decimal
	headerErrorMessage = "$rpc$-error-message" // its message
	headerErrorDetails = "$rpc$-error-details" // mesh's: the google.rpc.Status, binary
	headerProtoError   = "error"               // the SDK's proto handlers' message (client.Proto)
	// trailerPrefix marks the trailers of an answer among its headers: arg2
	// has one list, gRPC two.
	trailerPrefix = "$rpc$-trailer-"
)

// Metadata keys a gRPC caller uses to route: the mesh's names for what
// TChannel carries in transport headers (YARPC's keys).
const (
	mdService  = "rpc-service"
	mdCaller   = "rpc-caller"
	mdEncoding = "rpc-encoding"
	mdToken    = "mesh-token" // the caller's proof of rpc-caller; never forwarded
)

// transport pairs metadata keys with the transport headers they become.
var transport = [...]struct{ md, header string }{
	{mdCaller, frame.HeaderCallerName},
	{mdEncoding, frame.HeaderArgScheme},
	{"rpc-shard-key", frame.HeaderShardKey},
	{"rpc-routing-key", frame.HeaderRoutingKey},
	{"rpc-routing-delegate", frame.HeaderRoutingDelegate},
}

// notForwarded reports whether a metadata key stays at the gateway: HTTP/2
// pseudo-headers, gRPC's own, the routing keys (they became transport
// headers), the token, and the trace context (it travels in the frame).
func notForwarded(k string) bool {
	switch {
	case strings.HasPrefix(k, ":"), strings.HasPrefix(k, "grpc-"), strings.HasPrefix(k, "rpc-"), strings.HasPrefix(k, "x-b3-"):
		return true
	}
	switch k {
	case mdToken, "content-type", "user-agent", "te", "traceparent", "tracestate", "b3":
		return true
	}
	return false
}

// appendMD adds every value of md to an arg2 header list (the thrift
// scheme's), each key with prefix, but those the gateway keeps.
func appendMD(list []byte, md meta, prefix string) ([]byte, error) {
	if len(list) == 0 {
		list = []byte{0, 0}
	}
	for _, f := range md {
		if notForwarded(f.Name) {
			continue
		}
		k := f.Name
		if prefix != "" {
			k = prefix + k
		}
		var err error
		if list, err = frame.AppendAppHeader(list, k, f.Value); err != nil {
			return nil, err
		}
	}
	return list, nil
}

// arg2Of is the application headers a gRPC caller's metadata becomes.
func arg2Of(md meta) ([]byte, error) { return appendMD(nil, md, "") }

// mdSink fills metadata from TChannel headers, keeping the first header
// gRPC cannot carry (a key that is no metadata key, or one gRPC keeps).
type mdSink struct{ bad string }

func (s *mdSink) add(md *meta, k, v string) {
	key := lower(k)
	if !validKey(key) || notForwarded(key) {
		if s.bad == "" {
			s.bad = k
		}
		return
	}
	md.add(key, v)
}

// lower is k in lower case, without a copy if it is already.
func lower(k string) string {
	for i := 0; i < len(k); i++ {
		if 'A' <= k[i] && k[i] <= 'Z' {
			return strings.ToLower(k)
		}
	}
	return k
}

func (s *mdSink) err() error {
	if s.bad == "" {
		return nil
	}
	return fmt.Errorf("header %q cannot travel as gRPC metadata", s.bad)
}

// answer is an answer's arg2 split the way gRPC sends it.
type answer struct {
	header, trailer meta
	code            string // headerErrorCode
	message         string // headerErrorMessage, or the SDK's "error"
	details         string // headerErrorDetails
}

// answerOf reads an answer's application headers.
func answerOf(arg2 []byte) (answer, error) {
	var a answer
	var sink mdSink
	err := frame.EachAppHeader(arg2, func(kb, vb []byte) bool {
		k, v := string(kb), string(vb)
		switch k {
		case headerErrorCode:
			a.code = v
		case headerErrorMessage:
			a.message = v
		case headerProtoError:
			a.message = cmp.Or(a.message, v)
		case headerErrorDetails:
			a.details = v
		default:
			if t, ok := strings.CutPrefix(k, trailerPrefix); ok {
				sink.add(&a.trailer, t, v)
			} else {
				sink.add(&a.header, k, v)
			}
		}
		return true
	})
	return a, cmp.Or(err, sink.err())
}

// validKey reports whether k may be a gRPC metadata key (lower case
// letters, digits, '-', '_' and '.').
func validKey(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// procedureOf maps a gRPC path, /pkg.Service/Method, to the TChannel
// procedure pkg.Service::Method.
func procedureOf(path string) (string, bool) {
	svc, method, ok := strings.Cut(strings.TrimPrefix(path, "/"), "/")
	if !ok || svc == "" || method == "" || strings.Contains(method, "/") {
		return "", false
	}
	return svc + "::" + method, true
}

// pathOf maps a procedure, pkg.Service::Method, to its gRPC path.
func pathOf(procedure string) (string, bool) {
	svc, method, ok := strings.Cut(procedure, "::")
	if !ok || svc == "" || method == "" || strings.ContainsAny(procedure, "/") {
		return "", false
	}
	return "/" + svc + "/" + method, true
}
