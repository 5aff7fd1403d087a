package grpcgate

import (
	"fmt"

	"google.golang.org/grpc/mem"
)

// RawCodec moves gRPC messages as bytes (*[]byte): the gateway passes
// bodies through unchanged, so it never decodes one. Its name is proto's, so
// the content-type stays application/grpc(+proto) for the servers it calls.
type RawCodec struct{}

func (RawCodec) Name() string { return "proto" }

func (RawCodec) Marshal(v any) (mem.BufferSlice, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("grpcgate: cannot send a %T", v)
	}
	return mem.BufferSlice{mem.SliceBuffer(*b)}, nil
}

func (RawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("grpcgate: cannot receive into a %T", v)
	}
	*b = data.Materialize() // a copy: data is freed when this returns
	return nil
}
