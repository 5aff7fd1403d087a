package main

import (
	"bytes"
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

	"github.com/uber/tchannel-go"
	"github.com/uber/tchannel-go/raw"
	"github.com/uber/tchannel-go/relay/relaytest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshrpc/mesh/client"
	"github.com/meshrpc/mesh/internal/loadgen"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: benchpeer mesh-server|tchannel-server|tchannel-relay|tchannel-bench|grpc-bench ...")
		os.Exit(2)
	}
	var err error
	switch args := os.Args[2:]; os.Args[1] {
	case "mesh-server":
		err = meshServer(args[0])
	case "tchannel-server":
		err = tchannelServer(args[0])
	case "tchannel-relay":
		err = tchannelRelay(args[0], args[1])
	case "tchannel-bench":
		err = tchannelBench(args)
	case "grpc-bench":
		err = grpcBench(args)
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchpeer:", err)
		os.Exit(1)
	}
}

// untilSignal waits for SIGTERM or SIGINT.
func untilSignal() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	<-ctx.Done()
}

func meshServer(listen string) error {
	s := client.NewServer(client.Options{ServiceName: "echo"})
	s.Register("echo", "echo", client.HandlerFunc(func(ctx context.Context, call *client.Call) (*client.Response, error) {
		return &client.Response{Body: call.Body}, nil
	}))
	l, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	go s.Serve(l)
	untilSignal()
	return s.Shutdown(context.Background())
}

type echo struct{}

func (echo) Handle(ctx context.Context, args *raw.Args) (*raw.Res, error) {
	return &raw.Res{Arg3: args.Arg3}, nil
}
func (echo) OnError(context.Context, error) {}

func tchannelServer(listen string) error {
	ch, err := tchannel.NewChannel("echo", &tchannel.ChannelOptions{Logger: tchannel.NullLogger})
	if err != nil {
		return err
	}
	ch.Register(raw.Wrap(echo{}), "echo")
	if err := ch.ListenAndServe(listen); err != nil {
		return err
	}
	untilSignal()
	ch.Close()
	return nil
}

func tchannelRelay(listen, peer string) error {
	host := relaytest.NewStubRelayHost()
	ch, err := tchannel.NewChannel("relay", &tchannel.ChannelOptions{RelayHost: host, Logger: tchannel.NullLogger})
	if err != nil {
		return err
	}
	if err := ch.ListenAndServe(listen); err != nil {
		return err
	}
	host.Add("echo", peer)
	untilSignal()
	ch.Close()
	return nil
}

func tchannelBench(args []string) error {
	if len(args) != 4 {
		return fmt.Errorf("tchannel-bench ADDR CALLERS DURATION WARMUP")
	}
	addr := args[0]
	cfg, err := loadConfig(args[1:])
	if err != nil {
		return err
	}
	ch, err := tchannel.NewChannel("bench-caller", &tchannel.ChannelOptions{Logger: tchannel.NullLogger})
	if err != nil {
		return err
	}
	defer ch.Close()
	body := bytes.Repeat([]byte("x"), 1<<10)
	r, err := loadgen.Run(context.Background(), cfg, func(ctx context.Context) error {
		tctx, cancel := tchannel.NewContextBuilder(5 * time.Second).SetParentContext(ctx).Build()
		defer cancel()
		_, arg3, _, err := raw.Call(tctx, ch, addr, "echo", "echo", nil, body)
		if err == nil && len(arg3) != len(body) {
			err = fmt.Errorf("answered %d bytes", len(arg3))
		}
		return err
	})
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(r)
}

// grpcBench drives a stock gRPC client (one HTTP/2 connection, as grpc-go
// multiplexes) calling test.Words/Echo of service words at ADDR.
func grpcBench(args []string) error {
	if len(args) != 4 {
		return fmt.Errorf("grpc-bench ADDR CALLERS DURATION WARMUP")
	}
	cfg, err := loadConfig(args[1:])
	if err != nil {
		return err
	}
	cc, err := grpc.NewClient(args[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer cc.Close()
	body := wrapperspb.String(strings.Repeat("x", 1<<10))
	r, err := loadgen.Run(context.Background(), cfg, func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(ctx, "rpc-service", "words"), 5*time.Second)
		defer cancel()
		out := new(wrapperspb.StringValue)
		err := cc.Invoke(ctx, "/test.Words/Echo", body, out)
		if err == nil && len(out.GetValue()) < len(body.GetValue()) {
			err = fmt.Errorf("answered %d bytes", len(out.GetValue()))
		}
		return err
	})
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(r)
}

// loadConfig reads CALLERS DURATION WARMUP.
func loadConfig(args []string) (loadgen.Config, error) {
	conc, err := strconv.Atoi(args[0])
	if err != nil {
		return loadgen.Config{}, err
	}
	d, err := time.ParseDuration(args[1])
	if err != nil {
		return loadgen.Config{}, err
	}
	warm, err := time.ParseDuration(args[2])
	if err != nil {
		return loadgen.Config{}, err
	}
	return loadgen.Config{Concurrency: conc, Duration: d, Warmup: warm}, nil
}
