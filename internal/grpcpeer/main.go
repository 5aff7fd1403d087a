package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshrpc/mesh/internal/grpcpeer/words"
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
	words.Register(s, name)
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
