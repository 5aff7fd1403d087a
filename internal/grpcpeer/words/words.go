// Package words is test.Words (words.proto), the gRPC service of grpcpeer
// and of mesh's gRPC tests, written against google.golang.org/grpc alone:
// no mesh code, no generated code (Text is wire-compatible with
// google.protobuf.StringValue). Echo answers NAME:VALUE upper-cased, and on
// request: "code:N" status N, "sleep:D" after D (or the deadline),
// "busy-if:NAME" ResourceExhausted when NAME is the server's, "meta" the
// request's x-app metadata as a header and x-done as a trailer, "who" the
// mesh metadata it was sent as JSON.
package words

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Register adds test.Words, answering as name, to s.
func Register(s *grpc.Server, name string) {
	s.RegisterService(&grpc.ServiceDesc{
		ServiceName: "test.Words",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{MethodName: "Echo", Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.StringValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			return Echo(ctx, name, in.GetValue())
		}}},
		Streams: []grpc.StreamDesc{Chat},
	}, nil)
}

// Chat is test.Words' bidirectional stream; its handler answers nothing.
var Chat = grpc.StreamDesc{StreamName: "Chat", ClientStreams: true, ServerStreams: true, Handler: func(any, grpc.ServerStream) error { return nil }}

// Echo answers one call as a server named name would (see the package doc).
func Echo(ctx context.Context, name, v string) (*wrapperspb.StringValue, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	switch {
	case strings.HasPrefix(v, "code:"):
		n, _ := strconv.Atoi(v[5:])
		return nil, status.Errorf(codes.Code(n), "%s: status %d as asked", name, n)
	case strings.HasPrefix(v, "busy-if:"):
		if v[8:] == name {
			return nil, status.Errorf(codes.ResourceExhausted, "%s is busy", name)
		}
	case strings.HasPrefix(v, "sleep:"):
		d, _ := time.ParseDuration(v[6:])
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	case v == "meta":
		grpc.SetHeader(ctx, metadata.Pairs("x-app", strings.Join(md.Get("x-app"), "+")))
		grpc.SetTrailer(ctx, metadata.Pairs("x-done", "yes"))
	case v == "who":
		out := map[string]any{"name": name}
		for _, k := range []string{"rpc-service", "rpc-caller", "rpc-encoding", "rpc-shard-key", "traceparent", "b3"} {
			out[k] = strings.Join(md.Get(k), ",")
		}
		if dl, ok := ctx.Deadline(); ok {
			out["deadline_ms"] = time.Until(dl).Milliseconds()
		}
		b, _ := json.Marshal(out)
		return wrapperspb.String(string(b)), nil
	}
	return wrapperspb.String(name + ":" + strings.ToUpper(v)), nil
}
