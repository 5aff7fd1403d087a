package grpcgate

import (
	"encoding/base64"
	"fmt"
	"strings"

	"golang.org/x/net/http2/hpack"
)

// meta is a call's gRPC metadata as meshd carries it between its HTTP/2
// sides and arg2: the fields in the order they came, binary (-bin) values
// decoded. A call has a few, so a list: no map and no slice per key, as
// grpc-go's metadata.MD had, per call and per side.
type meta []hpack.HeaderField

// get is the first value of k, or "".
func (m meta) get(k string) string {
	for _, f := range m {
		if f.Name == k {
			return f.Value
		}
	}
	return ""
}

func (m *meta) add(k, v string) { *m = append(*m, hpack.HeaderField{Name: k, Value: v}) }

// addWire adds a received header field; a binary one (-bin) is decoded
// from base64, padded or not.
func (m *meta) addWire(k, v string) error {
	if strings.HasSuffix(k, "-bin") {
		b, err := decodeBin(v)
		if err != nil {
			return fmt.Errorf("metadata %q is not base64: %v", k, err)
		}
		v = string(b)
	}
	m.add(k, v)
	return nil
}

// appendFields adds the metadata to header fields, binary values in
// base64.
func (m meta) appendFields(f []hpack.HeaderField) []hpack.HeaderField {
	for _, hf := range m {
		if strings.HasSuffix(hf.Name, "-bin") {
			hf.Value = base64.RawStdEncoding.EncodeToString([]byte(hf.Value))
		}
		f = append(f, hf)
	}
	return f
}
