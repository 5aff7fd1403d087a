package meshd_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshrpc/mesh/client"
	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/internal/grpcgate"
	"github.com/meshrpc/mesh/internal/grpcpeer/words"
	"github.com/meshrpc/mesh/internal/meshd"
	"github.com/meshrpc/mesh/internal/testkit"
)

// Benign gRPC and TChannel callers see no failure while hostile HTTP/2
// peers do their worst on other connections: garbage after the preface, a
// flood of streams that never send their message, metadata past the header
// list limit, a message past the size limit, streams opened and reset at
// once, and a reader that never reads (its window closed); meshd's memory
// stays bounded.
func TestGRPCHostilePeers(t *testing.T) {
	cfg := meshdConfig(t, "127.0.0.1:0", discovery.NewLocal())
	cfg.GRPC = &grpcgate.Limits{MaxStreams: 100, MaxMessage: 64 << 10}
	d := startWith(t, cfg)
	wordsSDK(t, d.Addr(), "words")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)

	stop := make(chan struct{})
	var benign sync.WaitGroup
	var calls, failures atomic.Int64
	var firstErr atomic.Value
	fail := func(err error) {
		failures.Add(1)
		firstErr.CompareAndSwap(nil, err)
	}
	cc := grpcClient(t, d.Addr())
	tc := dialMeshd(t, d.Addr())
	for range 4 {
		benign.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
				got, err := echo(cctx, cc, "hi", nil, "rpc-service", "words")
				if err == nil && got != "sdk:HI" {
					err = io.ErrUnexpectedEOF
				}
				var out wrapperspb.StringValue
				if err == nil {
					_, err = tc.CallProto(cctx, "words", "test.Words::Echo", nil, wrapperspb.String("tc"), &out)
				}
				ccancel()
				calls.Add(1)
				if err != nil {
					fail(err)
				}
			}
		})
	}

	var peak atomic.Uint64 // the heap's high mark while the attacks go on
	sampling := make(chan struct{})
	go func() {
		defer close(sampling)
		var ms runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
		}
	}()
	var hostile sync.WaitGroup
	attacks := map[string]func(h *testkit.H2Peer){
		"garbage after the preface": func(h *testkit.H2Peer) {
			h.Conn.Write(bytes.Repeat([]byte{0xff}, 4096))
		},
		"a flood of streams that never send their message": func(h *testkit.H2Peer) {
			block := testkit.GRPCHeaders()
			for id := uint32(1); id < 2*5000; id += 2 {
				if h.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndHeaders: true}) != nil {
					return
				}
			}
		},
		"metadata past the header list limit": func(h *testkit.H2Peer) {
			for i, id := 0, uint32(1); i < 200; i, id = i+1, id+2 {
				if h.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: testkit.GRPCHeaders("x-big", strings.Repeat("a", 15000), "x-big2", strings.Repeat("b", 15000)), EndHeaders: true}) != nil {
					return
				}
			}
		},
		"messages past the size limit": func(h *testkit.H2Peer) {
			big := testkit.GRPCMessage(bytes.Repeat([]byte{1}, 1<<20))
			for i, id := 0, uint32(1); i < 50; i, id = i+1, id+2 {
				h.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: testkit.GRPCHeaders(), EndHeaders: true})
				for off := 0; off < len(big); off += 16 << 10 {
					if h.WriteData(id, false, big[off:min(off+16<<10, len(big))]) != nil {
						return
					}
				}
			}
		},
		"streams opened and reset at once": func(h *testkit.H2Peer) {
			block := testkit.GRPCHeaders()
			for id := uint32(1); id < 2*20000; id += 2 {
				if h.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndHeaders: true}) != nil ||
					h.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
					return
				}
			}
		},
	}
	for _, attack := range attacks {
		for range 3 {
			hostile.Go(func() {
				h := testkit.DialH2(t, d.Addr())
				attack(h)
				time.Sleep(2 * time.Second) // hold the connection while the benign calls go on
				h.Conn.Close()
			})
		}
	}
	// A reader that never reads: calls whose answers it never takes.
	hostile.Go(func() {
		nc, err := net.Dial("tcp", d.Addr())
		if err != nil {
			return
		}
		defer nc.Close()
		io.WriteString(nc, http2.ClientPreface)
		fr := http2.NewFramer(nc, nc)
		fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
		msg := testkit.GRPCText(strings.Repeat("z", 30000))
		for id := uint32(1); id < 2*90; id += 2 {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: testkit.GRPCHeaders(), EndHeaders: true})
			fr.WriteData(id, true, msg)
		}
		time.Sleep(3 * time.Second) // never reading a byte
	})
	hostile.Wait()
	close(stop)
	benign.Wait()
	<-sampling
	if failures.Load() > 0 {
		t.Fatalf("%d of %d benign calls failed while hostile peers attacked; first: %v", failures.Load(), calls.Load(), firstErr.Load())
	}
	if calls.Load() < 50 {
		t.Fatalf("only %d benign calls made in the attacks' time", calls.Load())
	}
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	if grown := int64(after.HeapInuse) - int64(before.HeapInuse); grown > 64<<20 || peak.Load() > 256<<20 {
		t.Fatalf("the heap grew by %d MiB under the attacks (peak %d MiB)", grown>>20, peak.Load()>>20)
	}
	t.Logf("%d benign calls, 0 failed; heap %d → %d MiB, peak %d MiB", calls.Load(), before.HeapInuse>>20, after.HeapInuse>>20, peak.Load()>>20)
	// The attacks reached the gateway and were refused there.
	mfs := scrape(t, d.AdminAddr())
	if n := samples(mfs, "mesh_grpc_refused_total", "reason")["message_size"]; n == 0 {
		t.Errorf("no message refused for its size: %v", samples(mfs, "mesh_grpc_refused_total", "reason"))
	}
	if n := samples(mfs, "mesh_grpc_connections_total")[""]; n < 17 {
		t.Errorf("%v gRPC connections counted, want the 16 hostile ones and the benign one", n)
	}
	// The gateway still serves a new connection.
	fresh := grpcClient(t, d.Addr())
	if got, err := echo(ctx, fresh, "after", nil, "rpc-service", "words"); err != nil || got != "sdk:AFTER" {
		t.Fatalf("after the attacks: %q, %v", got, err)
	}
}

// FuzzGRPCConn writes any bytes after HTTP/2's preface on a connection to
// meshd's app port; a benign gRPC client on its own connection, and a
// TChannel one, still get their answers after each input.
func FuzzGRPCConn(f *testing.F) {
	var call bytes.Buffer
	fr := http2.NewFramer(&call, nil)
	fr.WriteSettings()
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: testkit.GRPCHeaders(), EndHeaders: true})
	fr.WriteData(1, true, testkit.GRPCText("fuzz"))
	f.Add(call.Bytes())
	f.Add(call.Bytes()[:len(call.Bytes())-7])
	f.Add([]byte{0, 0, 4, 0xff, 0xff, 0, 0, 0, 1, 1, 2, 3, 4})
	var flood bytes.Buffer
	fr = http2.NewFramer(&flood, nil)
	for range 50 {
		fr.WritePing(false, [8]byte{})
		fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	}
	f.Add(flood.Bytes())

	cfg := meshdConfig(f, "127.0.0.1:0", discovery.NewLocal())
	cfg.GRPC = &grpcgate.Limits{}
	cfg.PeerListen, cfg.Trust = "", nil
	d, err := meshd.Start(cfg)
	if err != nil {
		f.Fatal(err)
	}
	defer d.Shutdown(context.Background())
	s := client.NewServer(client.Options{ServiceName: "words", Logger: testkit.Quiet})
	s.Register("words", "test.Words::Echo", client.Proto(func(ctx context.Context, h map[string]string, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		return in, nil
	}))
	if err := s.Advertise(context.Background(), d.Addr()); err != nil {
		f.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	cc, err := grpc.NewClient("passthrough:///"+d.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		f.Fatal(err)
	}
	defer cc.Close()
	tc, err := client.Dial(context.Background(), d.Addr(), client.Options{Logger: testkit.Quiet})
	if err != nil {
		f.Fatal(err)
	}
	defer tc.Close()
	f.Fuzz(func(t *testing.T, data []byte) {
		nc, err := net.Dial("tcp", d.Addr())
		if err != nil {
			t.Fatal(err)
		}
		nc.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(nc, http2.ClientPreface)
		nc.Write(data)
		nc.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		io.Copy(io.Discard, nc) // what meshd answers, until it pauses or closes
		nc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if got, err := echo(ctx, cc, "ok", nil, "rpc-service", "words"); err != nil || got != "ok" {
			t.Fatalf("a benign gRPC call after the input: %q, %v", got, err)
		}
		var out wrapperspb.StringValue
		if _, err := tc.CallProto(ctx, "words", "test.Words::Echo", nil, wrapperspb.String("tc"), &out); err != nil || out.GetValue() != "tc" {
			t.Fatalf("a benign TChannel call after the input: %q, %v", out.GetValue(), err)
		}
	})
}

// Peers that send half a frame, or a header block without its end, and
// go silent hold no one else's answers: each benign call, to an SDK
// service and to a stock gRPC server, on fresh connections (a caller's
// first call, which waits on a worker) and on one, is answered within a
// second while they hang on.
func TestGRPCHalfFramesHoldNoOne(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	words.Register(s, "g1")
	healthpb.RegisterHealthServer(s, health.NewServer())
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	cfg := meshdConfig(t, "127.0.0.1:0", discovery.NewLocal())
	cfg.GRPC = &grpcgate.Limits{}
	cfg.GRPCServers = []grpcgate.BackendConfig{{Service: "stock", Addr: lis.Addr().String(), CheckEvery: 50 * time.Millisecond}}
	d := startWith(t, cfg)
	wordsSDK(t, d.Addr(), "words")
	one := grpcClient(t, d.Addr())
	testkit.WaitFor(t, 5*time.Second, "the gRPC server in the mesh", func() bool {
		_, err := echo(context.Background(), one, "x", nil, "rpc-service", "stock")
		return err == nil
	})

	for range 4 { // half a DATA frame
		h := testkit.DialH2(t, d.Addr())
		h.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: testkit.GRPCHeaders(), EndHeaders: true})
		h.Conn.Write([]byte{0, 0x10, 0, byte(http2.FrameData), 0, 0, 0, 0, 1, 'h', 'a', 'l', 'f'})
	}
	for range 4 { // a header block that never ends
		h := testkit.DialH2(t, d.Addr())
		block := testkit.GRPCHeaders()
		h.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block[:len(block)/2]})
	}
	time.Sleep(100 * time.Millisecond) // the peers' bytes are read and waited on
	for i := range 10 {
		for _, service := range []string{"words", "stock"} {
			cc := one
			if i%2 == 0 {
				cc = grpcClient(t, d.Addr()) // a fresh connection: its first call
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			start := time.Now()
			_, err := echo(ctx, cc, "hi", nil, "rpc-service", service)
			cancel()
			if err != nil {
				t.Fatalf("call %d to %s while peers hang mid-frame: %v (after %v)", i, service, err, time.Since(start))
			}
		}
	}
}
