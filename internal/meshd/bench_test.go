package meshd_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/uber/tchannel-go"
	"github.com/uber/tchannel-go/raw"
	"github.com/uber/tchannel-go/relay/relaytest"

	"github.com/meshrpc/mesh/client"
	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/internal/testkit"
	"github.com/meshrpc/mesh/internal/tracing"
)

// BenchmarkHop measures what a meshd in the path costs: the SDK calling a
// server directly, through one meshd (the server advertised to it), and
// through two (caller → meshd A → meshd B → server); and, as the reference in
// the same run, tchannel-go direct and through tchannel-go's own relay (a
// RelayHost forwarding to one peer). mesh-1hop-unix is one meshd with both
// apps on its Unix socket (--listen-unix), as apps on its host may attach.
// 1 KiB bodies; 1, 64 and 512 callers (the no-regression loads).
func BenchmarkHop(b *testing.B) {
	body := bytes.Repeat([]byte("x"), 1<<10)
	for _, conc := range []int{1, 64, 512} {
		for _, path := range []string{"mesh-direct", "mesh-direct-unix", "mesh-1hop", "mesh-1hop-unix", "mesh-1hop-opsoff", "mesh-2hop", "tchannel-direct", "tchannel-relay"} {
			b.Run(fmt.Sprintf("%s/c=%d", path, conc), func(b *testing.B) {
				testkit.Bench(b, conc, body, hopCaller(b, path))
			})
		}
	}
}

func hopCaller(b *testing.B, path string) testkit.BenchCall {
	switch path {
	case "mesh-direct", "mesh-direct-unix", "mesh-1hop", "mesh-1hop-unix", "mesh-1hop-opsoff", "mesh-2hop":
		return meshPath(b, path)
	}
	return tchannelPath(b, path == "tchannel-relay")
}

func meshPath(b *testing.B, path string) testkit.BenchCall {
	if path == "mesh-direct" {
		return sdkCaller(b, sdkServer(b, "tcp"))
	}
	if path == "mesh-direct-unix" {
		return sdkCaller(b, "unix:"+sdkServer(b, "unix"))
	}
	reg := discovery.NewLocal()
	cfg := meshdConfig(b, "127.0.0.1:0", reg)
	cfg.NoOpsView = path == "mesh-1hop-opsoff" // what the ops view costs: the same hop without it
	if path == "mesh-1hop-unix" {
		cfg.ListenUnix = filepath.Join(b.TempDir(), "meshd.sock")
	}
	a := startWith(b, cfg)
	target := a.Addr()
	if cfg.ListenUnix != "" {
		target = "unix:" + cfg.ListenUnix
	}
	home := target
	if path == "mesh-2hop" {
		home = startMeshd(b, "127.0.0.2:0", reg).Addr()
	}
	if err := benchServer(b).Advertise(context.Background(), home); err != nil {
		b.Fatal(err)
	}
	return sdkCaller(b, target)
}

type benchEcho struct{}

func (benchEcho) Handle(ctx context.Context, args *raw.Args) (*raw.Res, error) {
	return &raw.Res{Arg3: args.Arg3}, nil
}
func (benchEcho) OnError(context.Context, error) {}

func tchannelPath(b *testing.B, viaRelay bool) testkit.BenchCall {
	target := tchannelServer(b)
	if viaRelay {
		host := relaytest.NewStubRelayHost()
		relay, err := tchannel.NewChannel("relay", &tchannel.ChannelOptions{RelayHost: host, Logger: tchannel.NullLogger})
		if err != nil {
			b.Fatal(err)
		}
		if err := relay.ListenAndServe("127.0.0.1:0"); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(relay.Close)
		host.Add("bench", target)
		target = relay.PeerInfo().HostPort
	}
	return tchannelCaller(b, target)
}

// tchannelServer serves the bench echo with tchannel-go; its host:port.
func tchannelServer(b *testing.B) string {
	srv, err := tchannel.NewChannel("bench", &tchannel.ChannelOptions{Logger: tchannel.NullLogger})
	if err != nil {
		b.Fatal(err)
	}
	srv.Register(raw.Wrap(benchEcho{}), "echo")
	if err := srv.ListenAndServe("127.0.0.1:0"); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(srv.Close)
	return srv.PeerInfo().HostPort
}

// tchannelCaller calls the bench echo at target with tchannel-go.
func tchannelCaller(b *testing.B, target string) testkit.BenchCall {
	cli, err := tchannel.NewChannel("bench-client", &tchannel.ChannelOptions{Logger: tchannel.NullLogger})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(cli.Close)
	return func(ctx context.Context, body []byte) ([]byte, error) {
		_, arg3, _, err := raw.Call(ctx, cli, target, "bench", "echo", nil, body)
		return arg3, err
	}
}

// BenchmarkTracing is the two-hop path (SDK → meshd → meshd → SDK server,
// 1 KiB, 64 callers) with tracing off, at 1% and at 100% sampling, spans
// going to a Zipkin endpoint that accepts and discards them: in proto3 (the
// default) and, for comparison, in JSON.
func BenchmarkTracing(b *testing.B) {
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusAccepted)
	}))
	defer sink.Close()
	body := bytes.Repeat([]byte("x"), 1<<10)
	for _, setting := range []struct {
		name     string
		rate     float64
		encoding string
	}{{"off", 0, ""}, {"sample=1%", 0.01, ""}, {"sample=100%", 1, ""}, {"json-sample=100%", 1, tracing.EncodingJSON}} {
		rate := setting.rate
		b.Run(setting.name, func(b *testing.B) {
			url := ""
			if rate > 0 {
				url = sink.URL
			}
			newTracer := func(service string) *tracing.Tracer {
				t, err := tracing.New(tracing.Config{ZipkinURL: url, Encoding: setting.encoding, SampleRate: rate, ServiceName: service})
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { t.Shutdown(context.Background()) })
				return t
			}
			reg := discovery.NewLocal()
			a := startMeshd(b, "127.0.0.1:0", reg, newTracer("meshd"))
			home := startMeshd(b, "127.0.0.2:0", reg, newTracer("meshd"))
			opts := client.Options{Logger: testkit.Quiet, Zipkin: url, ZipkinEncoding: setting.encoding, SampleRate: rate}
			srvOpts := opts
			srvOpts.ServiceName = "bench"
			srv := client.NewServer(srvOpts)
			srv.Register("bench", "echo", client.HandlerFunc(func(ctx context.Context, call *client.Call) (*client.Response, error) {
				return &client.Response{Body: call.Body}, nil
			}))
			if err := srv.Advertise(context.Background(), home.Addr()); err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { srv.Shutdown(context.Background()) })
			opts.ServiceName = "bench-client"
			c, err := client.Dial(context.Background(), a.Addr(), opts)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { c.Close() })
			testkit.Bench(b, 64, body, func(ctx context.Context, body []byte) ([]byte, error) {
				res, err := c.Call(ctx, "bench", "echo", nil, body)
				if err != nil {
					return nil, err
				}
				return res.Body, nil
			})
		})
	}
}
