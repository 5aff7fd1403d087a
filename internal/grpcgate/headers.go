package grpcgate

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/metadata"

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

// first is md's first value for k, or "".
func first(md metadata.MD, k string) string {
	if v := md.Get(k); len(v) > 0 {
		return v[0]
	}
	return ""
}

// appendPair adds k and v to a header list in the thrift scheme's form
// (nh:2 (k~2 v~2){nh}); list[0:2] holds the count.
func appendPair(list []byte, k, v string) ([]byte, error) {
	if len(list) < 2 {
		list = append(list[:0], 0, 0)
	}
	n := binary.BigEndian.Uint16(list)
	if n == 0xffff || len(k) > 0xffff || len(v) > 0xffff {
		return list, errors.New("more headers, or longer ones, than arg2 can hold")
	}
	binary.BigEndian.PutUint16(list, n+1)
	list = binary.BigEndian.AppendUint16(list, uint16(len(k)))
	list = append(list, k...)
	list = binary.BigEndian.AppendUint16(list, uint16(len(v)))
	return append(list, v...), nil
}

// eachPair calls fn with every header of a list in the thrift scheme's form.
func eachPair(list []byte, fn func(k, v string)) error {
	if len(list) == 0 {
		return nil
	}
	if len(list) < 2 {
		return errors.New("headers: truncated count")
	}
	n, b := int(binary.BigEndian.Uint16(list)), list[2:]
	str := func() (string, bool) {
		if len(b) < 2 {
			return "", false
		}
		l := int(binary.BigEndian.Uint16(b))
		if len(b) < 2+l {
			return "", false
		}
		s := string(b[2 : 2+l])
		b = b[2+l:]
		return s, true
	}
	for i := range n {
		k, ok := str()
		v, ok2 := str()
		if !ok || !ok2 {
			return fmt.Errorf("headers: header %d of %d truncated", i+1, n)
		}
		fn(k, v)
	}
	if len(b) != 0 {
		return fmt.Errorf("headers: %d bytes after the last header", len(b))
	}
	return nil
}

// arg2Of is the application headers a gRPC caller's metadata becomes: every
// key but those the gateway keeps, each value a header of its own.
func arg2Of(md metadata.MD) ([]byte, error) {
	list := []byte{0, 0}
	for k, vs := range md {
		if notForwarded(k) {
			continue
		}
		for _, v := range vs {
			var err error
			if list, err = appendPair(list, k, v); err != nil {
				return nil, err
			}
		}
	}
	return list, nil
}

// answer is an answer's arg2 split the way gRPC sends it.
type answer struct {
	header, trailer metadata.MD
	code            string // headerErrorCode
	message         string // headerErrorMessage, or the SDK's "error"
	details         string // headerErrorDetails
}

// answerOf reads an answer's application headers.
func answerOf(arg2 []byte) (answer, error) {
	a := answer{header: metadata.MD{}, trailer: metadata.MD{}}
	var bad string
	err := eachPair(arg2, func(k, v string) {
		switch k {
		case headerErrorCode:
			a.code = v
			return
		case headerErrorMessage:
			a.message = v
			return
		case headerProtoError:
			if a.message == "" {
				a.message = v
			}
			return
		case headerErrorDetails:
			a.details = v
			return
		}
		md, key := a.header, k
		if t, ok := strings.CutPrefix(k, trailerPrefix); ok {
			md, key = a.trailer, t
		}
		key = strings.ToLower(key)
		if !validKey(key) || notForwarded(key) {
			if bad == "" {
				bad = k
			}
			return
		}
		md[key] = append(md[key], v)
	})
	if err == nil && bad != "" {
		err = fmt.Errorf("header %q cannot travel as gRPC metadata", bad)
	}
	return a, err
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
