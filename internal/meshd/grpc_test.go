package meshd_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshrpc/mesh/client"
	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/grpcgate"
	"github.com/meshrpc/mesh/internal/grpcpeer/words"
	"github.com/meshrpc/mesh/internal/intentions"
	"github.com/meshrpc/mesh/internal/meshd"
	"github.com/meshrpc/mesh/internal/relay"
	"github.com/meshrpc/mesh/internal/testkit"
	"github.com/meshrpc/mesh/internal/tracing"
	"github.com/meshrpc/mesh/internal/zipkintest"
)

// grpcMeshd is a meshd whose app listener takes gRPC too, with the given
// stock gRPC servers.
func grpcMeshd(t *testing.T, reg discovery.Registry, servers ...grpcgate.BackendConfig) *meshd.Daemon {
	t.Helper()
	cfg := meshdConfig(t, "127.0.0.1:0", reg)
	cfg.GRPC = &grpcgate.Limits{}
	cfg.GRPCServers = servers
	return startWith(t, cfg)
}

// grpcServer starts a stock gRPC server of test.Words with the standard
// health service.
func grpcServer(t *testing.T) (string, *health.Server) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	words.Register(s, "g1")
	h := health.NewServer()
	healthpb.RegisterHealthServer(s, h)
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	return lis.Addr().String(), h
}

// grpcClient dials meshd as a stock gRPC client would, with opts.
func grpcClient(t *testing.T, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+addr, append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// echo calls test.Words/Echo on cc with the metadata pairs.
func echo(ctx context.Context, cc *grpc.ClientConn, v string, opts []grpc.CallOption, md ...string) (string, error) {
	out := new(wrapperspb.StringValue)
	err := cc.Invoke(metadata.AppendToOutgoingContext(ctx, md...), "/test.Words/Echo", wrapperspb.String(v), out, opts...)
	return out.GetValue(), err
}

// wordsSDK advertises test.Words::Echo as service on meshd with the SDK's
// proto handler: the TChannel side of the same procedure.
func wordsSDK(t *testing.T, meshdAddr, service string) {
	t.Helper()
	s := client.NewServer(client.Options{ServiceName: service, Logger: testkit.Quiet})
	s.Register(service, "test.Words::Echo", client.Proto(func(ctx context.Context, h map[string]string, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		if in.GetValue() == "fail" {
			return nil, errors.New("failed as asked")
		}
		return wrapperspb.String("sdk:" + strings.ToUpper(in.GetValue()) + h["x-app"]), nil
	}))
	if err := s.Advertise(context.Background(), meshdAddr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(context.Background()) })
}

// A stock gRPC client calls a TChannel (SDK) service through meshd, on
// the port TChannel apps use, through one meshd and through two; the
// service named by rpc-service or the :authority; metadata becomes
// headers; an application error comes back as a status.
func TestGRPCClientCallsTChannelService(t *testing.T) {
	reg := discovery.NewLocal()
	a := grpcMeshd(t, reg)
	b := grpcMeshd(t, reg)
	wordsSDK(t, b.Addr(), "words")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for name, addr := range map[string]string{"one meshd": b.Addr(), "two meshds": a.Addr()} {
		cc := grpcClient(t, addr)
		if got, err := echo(ctx, cc, "hi", nil, "rpc-service", "words", "x-app", "!"); err != nil || got != "sdk:HI!" {
			t.Fatalf("%s: Echo(hi) = %q, %v", name, got, err)
		}
		_, err := echo(ctx, cc, "fail", nil, "rpc-service", "words")
		if st := status.Convert(err); st.Code() != codes.Unknown || st.Message() != "failed as asked" {
			t.Fatalf("%s: an application error came back as %v", name, err)
		}
	}
	byAuthority := grpcClient(t, b.Addr())
	if got, err := echo(ctx, byAuthority, "x", []grpc.CallOption{grpc.CallAuthority("words")}); err != nil || got != "sdk:X" {
		t.Fatalf("named by :authority: %q, %v", got, err)
	}
	// TChannel apps still use the same port.
	c := dialMeshd(t, b.Addr())
	var out wrapperspb.StringValue
	if _, err := c.CallProto(ctx, "words", "test.Words::Echo", nil, wrapperspb.String("tc"), &out); err != nil || out.GetValue() != "sdk:TC" {
		t.Fatalf("a TChannel caller on the same port: %q, %v", out.GetValue(), err)
	}
}

// Calls the gateway refuses before routing get a status that says why.
func TestGRPCRefusals(t *testing.T) {
	d := grpcMeshd(t, discovery.NewLocal())
	wordsSDK(t, d.Addr(), "words")
	cc := grpcClient(t, d.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := echo(ctx, cc, "x", nil) // :authority is an address
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "rpc-service") {
		t.Fatalf("no service named: %v", err)
	}
	_, err = echo(ctx, cc, "x", nil, "rpc-service", "nosuch")
	if status.Code(err) != codes.Unavailable && status.Code(err) != codes.InvalidArgument {
		t.Fatalf("an unknown service: %v", err)
	}
	// A bidirectional stream that sends two messages.
	st, err := cc.NewStream(metadata.AppendToOutgoingContext(ctx, "rpc-service", "words"), &words.Chat, "/test.Words/Chat")
	if err != nil {
		t.Fatal(err)
	}
	st.SendMsg(wrapperspb.String("a"))
	st.SendMsg(wrapperspb.String("b"))
	st.CloseSend()
	err = st.RecvMsg(new(wrapperspb.StringValue))
	if s := status.Convert(err); s.Code() != codes.Unimplemented || !strings.Contains(s.Message(), "unary") {
		t.Fatalf("a stream: %v", err)
	}
	// The same connection still serves.
	if got, err := echo(ctx, cc, "ok", nil, "rpc-service", "words"); err != nil || got != "sdk:OK" {
		t.Fatalf("after the refusals: %q, %v", got, err)
	}
}

// A stock gRPC server named in meshd's config serves a mesh service: gRPC
// and TChannel callers reach it; metadata, deadlines and every status
// code round-trip; it leaves the mesh when its health check fails and
// comes back when it passes.
func TestGRPCServerJoinsTheMesh(t *testing.T) {
	addr, hs := grpcServer(t)
	reg := discovery.NewLocal()
	a := grpcMeshd(t, reg)
	grpcMeshd(t, reg, grpcgate.BackendConfig{Service: "words", Addr: addr, CheckEvery: 50 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cc := grpcClient(t, a.Addr())
	testkit.WaitFor(t, 5*time.Second, "the gRPC server registered", func() bool {
		_, err := echo(ctx, cc, "x", nil, "rpc-service", "words")
		return err == nil
	})

	var hdr, trl metadata.MD
	got, err := echo(ctx, cc, "meta", []grpc.CallOption{grpc.Header(&hdr), grpc.Trailer(&trl)}, "rpc-service", "words", "x-app", "1", "x-app", "2")
	if err != nil || got != "g1:META" || strings.Join(hdr.Get("x-app"), ",") != "1+2" || strings.Join(trl.Get("x-done"), ",") != "yes" {
		t.Fatalf("metadata: %q %v header %v trailer %v", got, err, hdr, trl)
	}
	got, err = echo(ctx, cc, "who", nil, "rpc-service", "words", "rpc-caller", "me", "rpc-shard-key", "k1")
	var who map[string]any
	if err != nil || json.Unmarshal([]byte(got), &who) != nil || who["rpc-service"] != "words" || who["rpc-caller"] != "me" ||
		who["rpc-encoding"] != "proto" || who["rpc-shard-key"] != "k1" {
		t.Fatalf("what the server is told: %q, %v", got, err)
	}
	short, cancelShort := context.WithTimeout(ctx, 100*time.Millisecond)
	got, err = echo(short, cc, "who", nil, "rpc-service", "words")
	cancelShort()
	if err != nil || json.Unmarshal([]byte(got), &who) != nil || who["deadline_ms"].(float64) > 100 {
		t.Fatalf("the deadline as the server sees it: %q, %v", got, err)
	}
	short, cancelShort = context.WithTimeout(ctx, 100*time.Millisecond)
	_, err = echo(short, cc, "sleep:1s", nil, "rpc-service", "words")
	cancelShort()
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("past the deadline: %v", err)
	}
	for code := codes.Canceled; code <= codes.Unauthenticated; code++ {
		_, err := echo(ctx, cc, fmt.Sprintf("code:%d", code), nil, "rpc-service", "words")
		st := status.Convert(err)
		want := fmt.Sprintf("g1: status %d as asked", code)
		if code == codes.Unavailable || code == codes.ResourceExhausted {
			// Retried on another instance (there is none), then answered.
			want = ""
		}
		if st.Code() != code || want != "" && st.Message() != want {
			t.Errorf("status %v came back as %v %q", code, st.Code(), st.Message())
		}
	}

	// A TChannel caller (the SDK) reaches the same server.
	c := dialMeshd(t, a.Addr())
	var out wrapperspb.StringValue
	if _, err := c.CallProto(ctx, "words", "test.Words::Echo", map[string]string{"x-app": "tc"}, wrapperspb.String("meta"), &out); err != nil || out.GetValue() != "g1:META" {
		t.Fatalf("a TChannel caller: %q, %v", out.GetValue(), err)
	}
	_, err = c.CallProto(ctx, "words", "test.Words::Echo", nil, wrapperspb.String("code:3"), &out)
	if frame.CodeOf(err) != frame.ErrCodeBadRequest {
		t.Fatalf("InvalidArgument to a TChannel caller: %v", err)
	}
	big := wrapperspb.String(strings.Repeat("b", grpcgate.DefaultMaxMessage))
	if _, err := c.CallProto(ctx, "words", "test.Words::Echo", nil, big, &out); frame.CodeOf(err) != frame.ErrCodeBadRequest {
		t.Fatalf("a request past the gRPC message limit: %v", err)
	}
	if _, err := c.Call(ctx, "words", "echo", nil, []byte("x")); frame.CodeOf(err) != frame.ErrCodeBadRequest || !strings.Contains(err.Error(), "pkg.Service::Method") {
		t.Fatalf("a procedure that is no gRPC method: %v", err)
	}

	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	testkit.WaitFor(t, 5*time.Second, "the gRPC server withdrawn", func() bool {
		_, err := echo(ctx, cc, "x", nil, "rpc-service", "words")
		return status.Code(err) == codes.Unavailable
	})
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	testkit.WaitFor(t, 5*time.Second, "the gRPC server back", func() bool {
		_, err := echo(ctx, cc, "x", nil, "rpc-service", "words")
		return err == nil
	})
}

// An intention decides on a gRPC caller's proven identity: rpc-caller,
// proven by its Unix user (meshd's own here).
func TestGRPCCallerIdentity(t *testing.T) {
	set, err := intentions.Compile([]intentions.Rule{{Source: "bad", Destination: "words", Action: "deny"}}, true, true)
	if err != nil {
		t.Fatal(err)
	}
	cfg := meshdConfig(t, "127.0.0.1:0", discovery.NewLocal())
	cfg.GRPC = &grpcgate.Limits{}
	cfg.Intentions = intentions.NewTable(set)
	cfg.AdvertiseRule = &meshd.AdvertiseRule{SameUser: true}
	d := startWith(t, cfg)
	wordsSDK(t, d.Addr(), "words")
	cc := grpcClient(t, d.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if got, err := echo(ctx, cc, "x", nil, "rpc-service", "words", "rpc-caller", "good"); err != nil || got != "sdk:X" {
		t.Fatalf("caller good: %q, %v", got, err)
	}
	_, err = echo(ctx, cc, "x", nil, "rpc-service", "words", "rpc-caller", "bad")
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "denied") {
		t.Fatalf("caller bad: %v", err)
	}

	// /calls explains a gRPC call as any other: its proven caller, method,
	// the instance it took; and the denied one with the stage that refused.
	// A call is recorded as it ends in meshd, which may be just after its
	// caller has the answer.
	var calls []relay.Explanation
	defer func() {
		if t.Failed() {
			t.Logf("/calls: %+v", calls)
		}
	}()
	testkit.WaitFor(t, 2*time.Second, "/calls explaining both gRPC calls", func() bool {
		calls = recentCalls(t, d.AdminAddr(), "service=words&limit=10")
		var ok, denied bool
		for _, c := range calls {
			ok = ok || c.Caller == "good" && c.Method == "test.Words::Echo" && c.Result == "ok" && len(c.Attempts) == 1
			denied = denied || c.Caller == "bad" && c.Stage == "authorize"
		}
		return ok && denied
	})

	// One connection calls as at most DefaultMaxIdentities callers (this one
	// has used "good" and "bad" already).
	for i := range grpcgate.DefaultMaxIdentities - 2 {
		if _, err := echo(ctx, cc, "x", nil, "rpc-service", "words", "rpc-caller", fmt.Sprintf("c%d", i)); err != nil {
			t.Fatalf("caller c%d: %v", i, err)
		}
	}
	_, err = echo(ctx, cc, "x", nil, "rpc-service", "words", "rpc-caller", "one-too-many")
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "as many callers") {
		t.Fatalf("a caller past the limit: %v", err)
	}
	if got, err := echo(ctx, cc, "x", nil, "rpc-service", "words", "rpc-caller", "good"); err != nil || got != "sdk:X" {
		t.Fatalf("a known caller after: %q, %v", got, err)
	}

	// A meshd whose rule lets no local user prove a name: rpc-caller is
	// refused as unproven, before routing.
	strict := meshdConfig(t, "127.0.0.1:0", discovery.NewLocal())
	strict.GRPC = &grpcgate.Limits{}
	strict.AdvertiseRule = &meshd.AdvertiseRule{}
	sd := startWith(t, strict)
	scc := grpcClient(t, sd.Addr())
	for range 2 { // refused each time, not remembered as proven
		_, err = echo(ctx, scc, "x", nil, "rpc-service", "words", "rpc-caller", "good")
		if st := status.Convert(err); st.Code() != codes.Unauthenticated || !strings.Contains(st.Message(), "advertise refused") {
			t.Fatalf("an unproven caller: %v", err)
		}
	}
}

// BenchmarkGRPC measures the gateway in one process: a stock gRPC client
// calling a stock gRPC server directly, through meshd (the server in its
// config), and through meshd to an SDK proto service. 1 KiB messages.
func BenchmarkGRPC(b *testing.B) {
	body := strings.Repeat("x", 1<<10)
	for _, conc := range []int{1, 64} {
		for _, path := range []string{"grpc-direct", "grpc-meshd", "grpc-meshd-sdk"} {
			b.Run(fmt.Sprintf("%s/c=%d", path, conc), func(b *testing.B) {
				cc := grpcPath(b, path)
				testkit.Bench(b, conc, []byte(body), func(ctx context.Context, in []byte) ([]byte, error) {
					out, err := echo(ctx, cc, string(in), nil, "rpc-service", "words")
					return []byte(out[strings.IndexByte(out, ':')+1:]), err // without the server's "g1:"
				})
			})
		}
	}
}

func grpcPath(b *testing.B, path string) *grpc.ClientConn {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s := grpc.NewServer()
	words.Register(s, "g1")
	healthpb.RegisterHealthServer(s, health.NewServer())
	go s.Serve(lis)
	b.Cleanup(s.Stop)
	target := lis.Addr().String()
	if path != "grpc-direct" {
		cfg := meshdConfig(b, "127.0.0.1:0", discovery.NewLocal())
		cfg.GRPC = &grpcgate.Limits{}
		if path == "grpc-meshd" {
			cfg.GRPCServers = []grpcgate.BackendConfig{{Service: "words", Addr: target, CheckEvery: 50 * time.Millisecond}}
		}
		d := startWith(b, cfg)
		target = d.Addr()
		if path == "grpc-meshd-sdk" {
			s := client.NewServer(client.Options{Logger: testkit.Quiet})
			s.Register("words", "test.Words::Echo", client.Proto(func(ctx context.Context, h map[string]string, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
				return in, nil
			}))
			if err := s.Advertise(context.Background(), target); err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Shutdown(context.Background()) })
		}
	}
	cc, err := grpc.NewClient("passthrough:///"+target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cc.Close() })
	testkit.WaitFor(b, 5*time.Second, path+" answering", func() bool {
		_, err := echo(context.Background(), cc, "x", nil, "rpc-service", "words")
		return err == nil
	})
	return cc
}

// A gRPC client that cancels its call, or whose deadline passes, has the
// service told (the call is cancelled through the relay), and gets
// Canceled or DeadlineExceeded; the connection serves the next call.
func TestGRPCCancelReachesTheService(t *testing.T) {
	d := grpcMeshd(t, discovery.NewLocal())
	ended := make(chan error, 4)
	s := client.NewServer(client.Options{ServiceName: "waits", Logger: testkit.Quiet})
	s.Register("waits", "test.Words::Echo", client.Proto(func(ctx context.Context, h map[string]string, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		if in.GetValue() != "wait" {
			return in, nil
		}
		select {
		case <-ctx.Done():
			ended <- ctx.Err()
		case <-time.After(10 * time.Second):
			ended <- errors.New("never told")
		}
		return nil, ctx.Err()
	}))
	if err := s.Advertise(context.Background(), d.Addr()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	cc := grpcClient(t, d.Addr())
	bg := context.Background()

	ctx, cancel := context.WithCancel(bg)
	time.AfterFunc(100*time.Millisecond, cancel)
	if _, err := echo(ctx, cc, "wait", nil, "rpc-service", "waits"); status.Code(err) != codes.Canceled {
		t.Fatalf("cancelled: %v", err)
	}
	if err := <-ended; err == nil || err.Error() == "never told" {
		t.Fatalf("the service was not told of the cancel: %v", err)
	}
	ctx, cancel = context.WithTimeout(bg, 150*time.Millisecond)
	defer cancel()
	if _, err := echo(ctx, cc, "wait", nil, "rpc-service", "waits"); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("past its deadline: %v", err)
	}
	if err := <-ended; err == nil || err.Error() == "never told" {
		t.Fatalf("the service was not told of the deadline: %v", err)
	}
	ctx, cancel = context.WithTimeout(bg, 5*time.Second)
	defer cancel()
	if got, err := echo(ctx, cc, "next", nil, "rpc-service", "waits"); err != nil || got != "next" {
		t.Fatalf("the next call: %q, %v", got, err)
	}
}

// A stock gRPC client's 128-bit trace (W3C traceparent) keeps its whole id
// through meshd: the gRPC server is sent it whole, meshd's span, the
// call's exemplar on /metrics and its explanation in /calls name it whole.
func TestGRPCKeepsA128BitTraceWhole(t *testing.T) {
	sink := zipkintest.New(t)
	tr, err := tracing.New(tracing.Config{ZipkinURL: sink.URL, SampleRate: 0, ServiceName: "meshd"})
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := grpcServer(t)
	cfg := meshdConfig(t, "127.0.0.1:0", discovery.NewLocal())
	cfg.GRPC = &grpcgate.Limits{}
	cfg.GRPCServers = []grpcgate.BackendConfig{{Service: "words", Addr: addr, CheckEvery: 50 * time.Millisecond}}
	cfg.Tracer = tr
	d := startWith(t, cfg)
	cc := grpcClient(t, d.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	testkit.WaitFor(t, 5*time.Second, "the gRPC server in the mesh", func() bool {
		_, err := echo(ctx, cc, "x", nil, "rpc-service", "words")
		return err == nil
	})
	const traceID = "5b8efff798038103d269b633813fc60c"
	got, err := echo(ctx, cc, "who", nil, "rpc-service", "words", "traceparent", "00-"+traceID+"-eee19b7ec3c1b174-01")
	var who map[string]any
	if err != nil || json.Unmarshal([]byte(got), &who) != nil {
		t.Fatalf("who: %q, %v", got, err)
	}
	if tp, _ := who["traceparent"].(string); !strings.HasPrefix(tp, "00-"+traceID+"-") || !strings.HasSuffix(tp, "-01") {
		t.Fatalf("the gRPC server got traceparent %q, want trace %s, sampled", tp, traceID)
	}
	if b3, _ := who["b3"].(string); !strings.HasPrefix(b3, traceID+"-") {
		t.Fatalf("the gRPC server got b3 %q, want trace %s", b3, traceID)
	}

	testkit.WaitFor(t, 5*time.Second, "the call explained and counted", func() bool {
		calls := recentCalls(t, d.AdminAddr(), "service=words&limit=10")
		return len(calls) > 0 && calls[0].TraceID == traceID
	})
	// A call meshd refuses (no one serves the service) is explained under
	// its whole trace id too.
	const refusedID = "4bf92f3577b34da6a3ce929d0e0e4736"
	if _, err := echo(ctx, cc, "x", nil, "rpc-service", "nosuch", "traceparent", "00-"+refusedID+"-00f067aa0ba902b7-01"); err == nil {
		t.Fatal("a call to a service no one serves was answered")
	}
	testkit.WaitFor(t, 5*time.Second, "the refused call explained", func() bool {
		calls := recentCalls(t, d.AdminAddr(), "service=nosuch&limit=10")
		return len(calls) > 0 && calls[0].TraceID == refusedID
	})
	req, _ := http.NewRequest("GET", "http://"+d.AdminAddr()+"/metrics", nil)
	req.Header.Set("Accept", "application/openmetrics-text;version=1.0.0")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	for _, family := range []string{"mesh_call_duration_seconds_bucket{", "mesh_instance_attempt_duration_seconds_bucket{"} {
		found := false
		for _, l := range strings.Split(string(body), "\n") {
			found = found || strings.HasPrefix(l, family) && strings.Contains(l, `# {trace_id="`+traceID+`"}`)
		}
		if !found {
			t.Errorf("no exemplar of trace %s on %s", traceID, strings.TrimSuffix(family, "{"))
		}
	}
	d.Shutdown(context.Background()) // flushes its spans
	if spans := trace(sink, traceID); len(spans) != 1 {
		t.Fatalf("meshd's spans in trace %s: %v, want its one hop", traceID, spans)
	}
}

// A gRPC connection, to a caller or to a gRPC server, outlives its write
// timeout: the timeout bounds each write, not the connection. Before, a
// deadline that meshd's write loop had set went on standing after the
// write, and the writes made without the loop (acks, answers) failed once it
// passed, closing the connection under a call. The caller here sends its
// settings a moment after its preface, so that meshd's own settings go out
// through the write loop first (as they did in a CI run): the case that
// failed.
func TestGRPCConnectionOutlivesItsWriteTimeout(t *testing.T) {
	backend, _ := grpcServer(t)
	cfg := meshdConfig(t, "127.0.0.1:0", discovery.NewLocal())
	cfg.GRPC = &grpcgate.Limits{WriteTimeout: 250 * time.Millisecond} // a loaded machine's writes still fit in it
	cfg.GRPCServers = []grpcgate.BackendConfig{{Service: "stock", Addr: backend, CheckEvery: time.Hour}}
	d := startWith(t, cfg)
	wordsSDK(t, d.Addr(), "words")
	cc := grpcClient(t, d.Addr(), grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
		nc, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		return &settingsLate{Conn: nc}, err
	}))
	testkit.WaitFor(t, 5*time.Second, "the gRPC server in the mesh", func() bool {
		_, err := echo(context.Background(), cc, "x", nil, "rpc-service", "stock")
		return err == nil
	})
	for i := range 4 {
		time.Sleep(2 * cfg.GRPC.WriteTimeout)
		for _, service := range []string{"words", "stock"} {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := echo(ctx, cc, "x", nil, "rpc-service", service)
			cancel()
			if err != nil {
				t.Fatalf("call %d to %s, %v after the connection opened: %v", i, service, time.Duration(i+1)*2*cfg.GRPC.WriteTimeout, err)
			}
		}
	}
	if n := samples(scrape(t, d.AdminAddr()), "mesh_grpc_connections_total")[""]; n != 1 {
		t.Fatalf("the caller's calls took %v connections, want 1", n)
	}
}

// settingsLate is a connection whose second write (grpc-go's settings,
// after its preface) waits 20 ms.
type settingsLate struct {
	net.Conn
	writes int
}

func (c *settingsLate) Write(b []byte) (int, error) {
	if c.writes++; c.writes == 2 {
		time.Sleep(20 * time.Millisecond)
	}
	return c.Conn.Write(b)
}
