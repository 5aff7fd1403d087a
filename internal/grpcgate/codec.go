package grpcgate

import (
	"fmt"

	"google.golang.org/grpc/mem"
)

// message is a gRPC message as bytes: the gateway passes bodies through
// unchanged, so it never decodes one.
type message struct{ b []byte }

// rawCodec moves messages as they are. Its name is proto's, so the
// content-type stays application/grpc(+proto) for the servers it calls.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(*message)
	if !ok {
		return nil, fmt.Errorf("grpcgate: cannot send a %T", v)
	}
	return mem.BufferSlice{mem.SliceBuffer(m.b)}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(*message)
	if !ok {
		return fmt.Errorf("grpcgate: cannot receive into a %T", v)
	}
	m.b = data.Materialize() // a copy: data is freed when this returns
	return nil
}
