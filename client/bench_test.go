package client_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"testing"

	"github.com/uber/tchannel-go"
	"github.com/uber/tchannel-go/raw"

	"github.com/meshrpc/mesh/client"
	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/testkit"
)

// BenchmarkDirectCall measures a raw call from a client to a server over
// loopback, mesh against tchannel-go in the same run. Both sides live in this
// process, so cpu-ns/op is the CPU of one whole call (caller and callee).
// Compare ratios within one run; absolute numbers move with the machine.
func BenchmarkDirectCall(b *testing.B) {
	cases := []struct {
		conc int
		body int
	}{{1, 1 << 10}, {64, 1 << 10}, {512, 1 << 10}, {64, 100 << 10}}
	for _, tc := range cases {
		name := fmt.Sprintf("c=%d/body=%dKiB", tc.conc, tc.body>>10)
		b.Run("mesh/"+name, func(b *testing.B) {
			call := meshCaller(b)
			testkit.Bench(b, tc.conc, bytes.Repeat([]byte("x"), tc.body), call)
		})
		b.Run("tchannel-go/"+name, func(b *testing.B) {
			call := tchannelCaller(b)
			testkit.Bench(b, tc.conc, bytes.Repeat([]byte("x"), tc.body), call)
		})
	}
}

// BenchmarkPeersCall is the SDK's direct mode (DialPeers: internal/routing's
// stages pick a peer per call) against a plain Dial, in the same run: over
// one server, what routing in the SDK costs per call; over three, that plus
// spreading 64 callers' batches over three connections.
func BenchmarkPeersCall(b *testing.B) {
	body := bytes.Repeat([]byte("x"), 1<<10)
	b.Run("dial", func(b *testing.B) { testkit.Bench(b, 64, body, meshCaller(b)) })
	for _, n := range []int{1, 3} {
		b.Run(fmt.Sprintf("peers=%d", n), func(b *testing.B) { testkit.Bench(b, 64, body, peersCaller(b, n)) })
	}
}

func peersCaller(b *testing.B, n int) testkit.BenchCall {
	var addrs []string
	for range n {
		addrs = append(addrs, echoServer(b))
	}
	c, err := client.DialPeers(context.Background(), addrs, client.Options{ServiceName: "bench-client", Checksum: frame.ChecksumCRC32})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return echoCall(c)
}

// echoCall calls bench/echo on c.
func echoCall(c *client.Client) testkit.BenchCall {
	return func(ctx context.Context, body []byte) ([]byte, error) {
		res, err := c.Call(ctx, "bench", "echo", nil, body)
		if err != nil {
			return nil, err
		}
		return res.Body, nil
	}
}

// echoServer serves bench/echo on a loopback port and returns its address.
func echoServer(b *testing.B) string {
	s := client.NewServer(client.Options{Checksum: frame.ChecksumCRC32})
	s.Register("bench", "echo", client.HandlerFunc(func(ctx context.Context, call *client.Call) (*client.Response, error) {
		return &client.Response{Body: call.Body}, nil
	}))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go s.Serve(l)
	b.Cleanup(func() { s.Shutdown(context.Background()) })
	return l.Addr().String()
}

func meshCaller(b *testing.B) testkit.BenchCall {
	c, err := client.Dial(context.Background(), echoServer(b), client.Options{ServiceName: "bench-client", Checksum: frame.ChecksumCRC32})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return echoCall(c)
}

type tchannelEcho struct{}

func (tchannelEcho) Handle(ctx context.Context, args *raw.Args) (*raw.Res, error) {
	return &raw.Res{Arg3: args.Arg3}, nil
}
func (tchannelEcho) OnError(context.Context, error) {}

func tchannelCaller(b *testing.B) testkit.BenchCall {
	srv, err := tchannel.NewChannel("bench", nil)
	if err != nil {
		b.Fatal(err)
	}
	srv.Register(raw.Wrap(tchannelEcho{}), "echo")
	if err := srv.ListenAndServe("127.0.0.1:0"); err != nil {
		b.Fatal(err)
	}
	cli, err := tchannel.NewChannel("bench-client", nil)
	if err != nil {
		b.Fatal(err)
	}
	addr := srv.PeerInfo().HostPort
	b.Cleanup(func() {
		cli.Close()
		srv.Close()
	})
	return func(ctx context.Context, body []byte) ([]byte, error) {
		_, arg3, _, err := raw.Call(ctx, cli, addr, "bench", "echo", nil, body)
		return arg3, err
	}
}
