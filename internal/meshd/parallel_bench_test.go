package meshd_test

import (
	"bytes"
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshrpc/mesh/client"
	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/internal/intentions"
	"github.com/meshrpc/mesh/internal/meshd"
	"github.com/meshrpc/mesh/internal/testkit"
)

// BenchmarkRelayParallel is the relay path under many goroutines at once:
// 8 SDK connections calling through one meshd to 4 instances of a service
// advertised to it, from b.RunParallel (16 goroutines per core). It shows
// how the relay scales with cores: run it with -cpu 1,2 and -mutexprofile
// to see which locks the calls share.
func BenchmarkRelayParallel(b *testing.B) {
	reg := discovery.NewLocal()
	a := startMeshd(b, "127.0.0.1:0", reg)
	for range 4 {
		advertiseEcho(b, a.Addr(), "par")
	}
	b.SetBytes(256)
	callParallel(b, a.Addr(), "par", 16)
}

// BenchmarkHostBoundary is a call through two meshds with 64 callers at
// once (8 SDK connections to the first meshd, an echo advertised to the
// second), with the host boundary in plaintext (--tls off), in mutual TLS
// 1.3, and in mutual TLS with intentions asked on both hops (1,000 rules).
// The target: mTLS at least 85% of plaintext's calls/s, measured
// in the same run (scripts/bench-trust.sh alternates rounds).
func BenchmarkHostBoundary(b *testing.B) {
	var rules []intentions.Rule
	for i := range 1000 {
		rules = append(rules, intentions.Rule{Source: fmt.Sprint("svc", i), Destination: "hop", Action: "deny"})
	}
	rules = append(rules, intentions.Rule{Source: "bench", Destination: "hop", Action: "allow"})
	set, err := intentions.Compile(rules, false, false)
	if err != nil {
		b.Fatal(err)
	}
	for _, mode := range []string{"plaintext", "mtls", "mtls+intentions"} {
		b.Run(mode, func(b *testing.B) {
			reg := discovery.NewLocal()
			cfg := func(ip string) meshd.Config {
				c := meshd.Config{Listen: ip + ":0", PeerListen: ip + ":0", Registry: reg, Logger: testkit.Quiet}
				if mode != "plaintext" {
					c.Trust = meshdTrust(b)
				}
				if mode == "mtls+intentions" {
					c.Intentions = intentions.NewTable(set)
				}
				return c
			}
			a, home := startWith(b, cfg("127.0.0.1")), startWith(b, cfg("127.0.0.2"))
			advertiseEcho(b, home.Addr(), "hop")
			start := time.Now()
			callParallel(b, a.Addr(), "hop", 32) // 64 callers on 2 cores
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "calls/s")
		})
	}
}

// advertiseEcho advertises an echo of service to the meshd at addr.
func advertiseEcho(b *testing.B, addr, service string) {
	srv := client.NewServer(client.Options{Logger: testkit.Quiet})
	srv.Register(service, "echo", client.HandlerFunc(func(ctx context.Context, call *client.Call) (*client.Response, error) {
		return &client.Response{Body: call.Body}, nil
	}))
	b.Cleanup(func() { srv.Shutdown(context.Background()) })
	if err := srv.Advertise(context.Background(), addr); err != nil {
		b.Fatal(err)
	}
}

// callParallel makes b.N calls of 256 B to service's echo through the meshd
// at addr, from parallelism goroutines per core over 8 SDK connections.
func callParallel(b *testing.B, addr, service string, parallelism int) {
	clients := make([]*client.Client, 8)
	for i := range clients {
		c, err := client.Dial(context.Background(), addr, client.Options{ServiceName: "bench", Logger: testkit.Quiet})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		clients[i] = c
	}
	body := bytes.Repeat([]byte("x"), 256)
	var next atomic.Uint32
	b.ReportAllocs()
	b.SetParallelism(parallelism)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		c := clients[next.Add(1)%uint32(len(clients))]
		for pb.Next() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			res, err := c.Call(ctx, service, "echo", nil, body)
			cancel()
			if err != nil || len(res.Body) != len(body) {
				b.Errorf("call: %v", err)
				return
			}
		}
	})
}
