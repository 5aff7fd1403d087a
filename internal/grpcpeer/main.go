package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func main() {
	var err error
	switch {
	case len(os.Args) == 4 && os.Args[1] == "server":
		err = serve(os.Args[2], os.Args[3])
	case len(os.Args) >= 4 && os.Args[1] == "call":
		err = call(os.Args[2], os.Args[3], os.Args[4:])
	default:
		err = fmt.Errorf("usage: grpcpeer server LISTEN NAME | grpcpeer call ADDR VALUE [KEY=VALUE...]")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "grpcpeer:", err)
		os.Exit(1)
	}
}

func serve(listen, name string) error {
	lis, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	s := grpc.NewServer()
	s.RegisterService(&grpc.ServiceDesc{
		ServiceName: "test.Words",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{MethodName: "Echo", Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.StringValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			return echo(ctx, name, in.GetValue())
		}}},
	}, nil)
	h := health.NewServer()
	healthpb.RegisterHealthServer(s, h)
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		for v := range sig {
			switch v {
			case syscall.SIGUSR1:
				h.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
			case syscall.SIGUSR2:
				h.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
			default:
				s.GracefulStop()
			}
		}
	}()
	fmt.Println("grpcpeer serving on", lis.Addr())
	return s.Serve(lis)
}

func echo(ctx context.Context, name, v string) (*wrapperspb.StringValue, error) {
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

// result is what call prints.
type result struct {
	Value   string              `json:"value"`
	Code    string              `json:"code"`
	Message string              `json:"message,omitempty"`
	Header  map[string][]string `json:"header,omitempty"`
	Trailer map[string][]string `json:"trailer,omitempty"`
}

func call(addr, value string, args []string) error {
	ctx := context.Background()
	var pairs []string
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok {
			return fmt.Errorf("%q: want KEY=VALUE", a)
		}
		if k == "timeout" {
			d, err := time.ParseDuration(v)
			if err != nil {
				return err
			}
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, d)
			defer cancel()
			continue
		}
		pairs = append(pairs, k, v)
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer cc.Close()
	out := new(wrapperspb.StringValue)
	var header, trailer metadata.MD
	err = cc.Invoke(metadata.AppendToOutgoingContext(ctx, pairs...), "/test.Words/Echo", wrapperspb.String(value), out, grpc.Header(&header), grpc.Trailer(&trailer))
	st := status.Convert(err)
	return json.NewEncoder(os.Stdout).Encode(result{Value: out.GetValue(), Code: st.Code().String(), Message: st.Message(), Header: header, Trailer: trailer})
}
