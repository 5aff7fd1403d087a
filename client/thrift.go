package client

import (
	"context"
	"encoding/binary"
	"fmt"
	"maps"
	"slices"

	"github.com/meshrpc/mesh/frame"
)

// CallThrift makes a call in TChannel's thrift scheme: method is
// "Service::method", args the Thrift binary struct of its arguments, and
// headers go in arg2 as thrift's nh:2 (k~2 v~2). It returns the answer's
// result struct (internal/thriftjson decodes both from an IDL); exception
// says the callee raised a declared exception (the struct then holds it).
func (c *Client) CallThrift(ctx context.Context, service, method string, headers map[string]string, args []byte, opts ...CallOption) (result []byte, resHeaders map[string]string, exception bool, err error) {
	res, err := c.call(ctx, "thrift", service, method, ThriftHeaders(headers), nil, args, opts)
	if err != nil {
		return nil, nil, false, err
	}
	if resHeaders, err = ParseThriftHeaders(res.Arg2); err != nil {
		return nil, nil, false, fmt.Errorf("%w: the answer's headers: %v", ErrEncoding, err)
	}
	return res.Arg3, resHeaders, res.Code != frame.ResOK, nil
}

// ThriftHeaders encodes headers as the thrift scheme's arg2, in key order.
func ThriftHeaders(h map[string]string) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(len(h)))
	for _, k := range slices.Sorted(maps.Keys(h)) {
		b = binary.BigEndian.AppendUint16(b, uint16(len(k)))
		b = append(b, k...)
		b = binary.BigEndian.AppendUint16(b, uint16(len(h[k])))
		b = append(b, h[k]...)
	}
	return b
}

// ParseThriftHeaders decodes a thrift scheme's arg2; empty is no headers.
func ParseThriftHeaders(b []byte) (map[string]string, error) {
	if len(b) == 0 {
		return nil, nil
	}
	str := func() (string, bool) {
		if len(b) < 2 || len(b) < 2+int(binary.BigEndian.Uint16(b)) {
			return "", false
		}
		n := int(binary.BigEndian.Uint16(b))
		s := string(b[2 : 2+n])
		b = b[2+n:]
		return s, true
	}
	if len(b) < 2 {
		return nil, fmt.Errorf("thrift headers of %d bytes: no count", len(b))
	}
	n := int(binary.BigEndian.Uint16(b))
	b = b[2:]
	h := make(map[string]string, n)
	for i := range n {
		k, ok1 := str()
		v, ok2 := str()
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("thrift headers: header %d of %d is cut short", i+1, n)
		}
		h[k] = v
	}
	if len(b) > 0 {
		return nil, fmt.Errorf("thrift headers: %d bytes after the last header", len(b))
	}
	return h, nil
}

// ThriftException is what a Thrift handler returns for a declared
// exception: result is the result struct that holds it. The caller gets an
// application error with it, as tchannel-go's thrift servers send one.
func ThriftException(result []byte) error {
	return &ApplicationError{Headers: ThriftHeaders(nil), Body: result}
}
