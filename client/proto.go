package client

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/meshrpc/mesh/frame"
)

// ProtoScheme is the "as" header of the proto encoding (YARPC's): arg2
// holds the application headers as the thrift scheme does (nh:2 (k~2
// v~2)), arg3 the request or response message in protobuf's binary
// encoding, and the method is "pkg.Service::Method" (gRPC's path
// /pkg.Service/Method).
const ProtoScheme = "proto"

// CallProto makes a call in the proto encoding: req goes as arg3, and the
// answer's message is decoded into res. An application error comes back
// as an *ApplicationError (its Body the response bytes, if any).
func (c *Client) CallProto(ctx context.Context, service, method string, headers map[string]string, req, res proto.Message, opts ...CallOption) (map[string]string, error) {
	body, err := proto.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("%w: the request: %v", ErrEncoding, err)
	}
	r, err := c.call(ctx, ProtoScheme, service, method, ThriftHeaders(headers), nil, body, opts)
	if err != nil {
		return nil, err
	}
	resHeaders, err := ParseThriftHeaders(r.Arg2)
	if err != nil {
		return nil, fmt.Errorf("%w: the answer's headers: %v", ErrEncoding, err)
	}
	if r.Code != frame.ResOK {
		return resHeaders, &ApplicationError{Headers: r.Arg2, Body: r.Arg3, Message: resHeaders[protoErrorHeader]}
	}
	if err := proto.Unmarshal(r.Arg3, res); err != nil {
		return resHeaders, fmt.Errorf("%w: the answer: %v", ErrEncoding, err)
	}
	return resHeaders, nil
}

// protoErrorHeader carries an application error's message in the answer's
// headers (the body is empty).
const protoErrorHeader = "error"

// Proto adapts a typed function to a Handler in the proto encoding: the
// request is decoded into a new *In, the function's message is the
// answer, and an error it returns that is not an *Error is an application
// error whose message goes back in the "error" header.
func Proto[In any, Req interface {
	*In
	proto.Message
}, Res proto.Message](fn func(ctx context.Context, headers map[string]string, req Req) (Res, error)) Handler {
	return HandlerFunc(func(ctx context.Context, call *Call) (*Response, error) {
		headers, err := ParseThriftHeaders(call.Headers)
		if err != nil {
			return nil, Errorf(frame.ErrCodeBadRequest, "proto call headers: %v", err)
		}
		req := Req(new(In))
		if err := proto.Unmarshal(call.Body, req); err != nil {
			return nil, Errorf(frame.ErrCodeBadRequest, "decoding the %s request: %v", req.ProtoReflect().Descriptor().FullName(), err)
		}
		res, err := fn(ctx, headers, req)
		if err != nil {
			var werr *Error
			if errors.As(err, &werr) {
				return nil, werr
			}
			return nil, &ApplicationError{Headers: ThriftHeaders(map[string]string{protoErrorHeader: err.Error()}), Message: err.Error()}
		}
		body, err := proto.Marshal(res)
		if err != nil {
			return nil, Errorf(frame.ErrCodeUnexpected, "encoding the answer: %v", err)
		}
		return &Response{Headers: ThriftHeaders(nil), Body: body}, nil
	})
}
