package client

import (
	"context"
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

// ThriftHeaders encodes headers as the thrift scheme's arg2, in key order
// (a key or value over 64 KiB is cut: the list's lengths have 16 bits).
func ThriftHeaders(h map[string]string) []byte {
	b := []byte{0, 0}
	for _, k := range slices.Sorted(maps.Keys(h)) {
		b, _ = frame.AppendAppHeader(b, k[:min(len(k), 0xffff)], h[k][:min(len(h[k]), 0xffff)])
	}
	return b
}

// ParseThriftHeaders decodes a thrift scheme's arg2; empty is no headers.
func ParseThriftHeaders(b []byte) (map[string]string, error) {
	if len(b) == 0 {
		return nil, nil
	}
	h := map[string]string{}
	err := frame.EachAppHeader(b, func(k, v []byte) bool {
		h[string(k)] = string(v)
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("thrift headers: %w", err)
	}
	return h, nil
}

// ThriftException is what a Thrift handler returns for a declared
// exception: result is the result struct that holds it. The caller gets an
// application error with it, as tchannel-go's thrift servers send one.
func ThriftException(result []byte) error {
	return &ApplicationError{Headers: ThriftHeaders(nil), Body: result}
}
