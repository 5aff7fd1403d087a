package meshd_test

import (
	"bytes"
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshrpc/mesh/client"
	"github.com/meshrpc/mesh/discovery"
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
		srv := client.NewServer(client.Options{Logger: testkit.Quiet})
		srv.Register("par", "echo", client.HandlerFunc(func(ctx context.Context, call *client.Call) (*client.Response, error) {
			return &client.Response{Body: call.Body}, nil
		}))
		b.Cleanup(func() { srv.Shutdown(context.Background()) })
		if err := srv.Advertise(context.Background(), a.Addr()); err != nil {
			b.Fatal(err)
		}
	}
	clients := make([]*client.Client, 8)
	for i := range clients {
		c, err := client.Dial(context.Background(), a.Addr(), client.Options{ServiceName: "par-client", Logger: testkit.Quiet})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		clients[i] = c
	}
	body := bytes.Repeat([]byte("x"), 256)
	var next atomic.Uint32
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		c := clients[next.Add(1)%uint32(len(clients))]
		for pb.Next() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			res, err := c.Call(ctx, "par", "echo", nil, body)
			cancel()
			if err != nil || len(res.Body) != len(body) {
				b.Errorf("call: %v", err)
				return
			}
		}
	})
}
