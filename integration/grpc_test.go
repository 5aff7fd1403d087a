//go:build integration

package integration

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/uber/tchannel-go"
	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshrpc/mesh/client"
	"github.com/meshrpc/mesh/internal/testconsul"
	"github.com/meshrpc/mesh/internal/testkit"
)

// grpcResult is what `grpcpeer call` prints.
type grpcResult struct {
	Value   string              `json:"value"`
	Code    string              `json:"code"`
	Message string              `json:"message"`
	Header  map[string][]string `json:"header"`
	Trailer map[string][]string `json:"trailer"`
}

// grpcCall runs the stock gRPC client (grpcpeer call) against addr.
func grpcCall(t *testing.T, addr, value string, md ...string) grpcResult {
	t.Helper()
	out, err := exec.Command(filepath.Join(binDir, "grpcpeer"), append([]string{"call", addr, value}, md...)...).CombinedOutput()
	var r grpcResult
	if err != nil || json.Unmarshal(out, &r) != nil {
		t.Fatalf("grpcpeer call %s %q: %v: %s", addr, value, err, out)
	}
	return r
}

// grpcServer starts a stock gRPC server (grpcpeer server) named name.
func grpcServer(t *testing.T, ip, name string) (*proc, string) {
	t.Helper()
	addr := net.JoinHostPort(ip, strconv.Itoa(testconsul.FreePorts(t, ip, 1)[0]))
	return start(t, "grpcpeer", "server", addr, name), addr
}

// proto words service on the TChannel side: the SDK with the proto
// encoding, serving test.Words::Echo as service.
func sdkWords(t *testing.T, meshdAddr, service string) {
	t.Helper()
	s := client.NewServer(client.Options{ServiceName: service, Logger: testkit.Quiet})
	s.Register(service, "test.Words::Echo", client.Proto(func(ctx context.Context, h map[string]string, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		return wrapperspb.String("sdk:" + strings.ToUpper(in.GetValue()) + h["x-app"]), nil
	}))
	if err := s.Advertise(context.Background(), meshdAddr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(context.Background()) })
}

// Stock gRPC programs in a mesh of two hosts with a real Consul: a gRPC
// client calls a TChannel (SDK) service through one and two meshds and a
// gRPC server on the other host; TChannel callers (the SDK, meshctl with
// the .proto, tchannel-go) call the gRPC server; metadata, deadlines and
// every status code round-trip; grpcurl is driven as a user would; the
// gRPC server leaves the mesh (and Consul's passing set) when its health
// check fails, and comes back.
func TestGRPCAcrossTheMesh(t *testing.T) {
	agent := testconsul.Start(t)
	capi := consulAPI(t, agent.HTTPAddr)
	g1, g1Addr := grpcServer(t, "127.0.0.2", "g1")
	a := startHost(t, "127.0.0.1", agent.HTTPAddr)
	b := startHost(t, "127.0.0.2", agent.HTTPAddr, "--grpc-servers", "words="+g1Addr, "--grpc-check-every", "200ms")
	sdkWords(t, b.addr, "tcwords")
	testkit.WaitFor(t, 15*time.Second, "words and tcwords seen from host A", func() bool { return seesServices(t, a, "words", "tcwords") })
	if e := passing(t, capi, "words"); len(e) != 1 || addrOf(e[0]) != b.peer {
		t.Fatalf("consul's passing instances of words: %d, want 1 at %s", len(e), b.peer)
	}

	// gRPC → TChannel (SDK), through one meshd and through two.
	for _, via := range []string{b.addr, a.addr} {
		if r := grpcCall(t, via, "hi", "rpc-service=tcwords", "x-app=!"); r.Code != "OK" || r.Value != "sdk:HI!" {
			t.Fatalf("gRPC → tcwords via %s: %+v", via, r)
		}
	}
	// gRPC → gRPC across two hosts: metadata and trailers, what the server is told, the deadline.
	r := grpcCall(t, a.addr, "meta", "rpc-service=words", "x-app=1")
	if r.Code != "OK" || r.Value != "g1:META" || strings.Join(r.Header["x-app"], ",") != "1" || strings.Join(r.Trailer["x-done"], ",") != "yes" {
		t.Fatalf("metadata across two hosts: %+v", r)
	}
	r = grpcCall(t, a.addr, "who", "rpc-service=words", "rpc-caller=me", "rpc-shard-key=k", "timeout=700ms")
	var who map[string]any
	if r.Code != "OK" || json.Unmarshal([]byte(r.Value), &who) != nil || who["rpc-service"] != "words" || who["rpc-caller"] != "me" ||
		who["rpc-encoding"] != "proto" || who["rpc-shard-key"] != "k" {
		t.Fatalf("what the gRPC server is told: %+v", r)
	}
	if ms, _ := who["deadline_ms"].(float64); ms <= 0 || ms > 700 {
		t.Fatalf("the server's deadline: %v ms left of 700", who["deadline_ms"])
	}
	if r := grpcCall(t, a.addr, "sleep:2s", "rpc-service=words", "timeout=300ms"); r.Code != "DeadlineExceeded" {
		t.Fatalf("past the deadline: %+v", r)
	}
	for code := 1; code <= 16; code++ {
		r := grpcCall(t, a.addr, fmt.Sprintf("code:%d", code), "rpc-service=words")
		want := fmt.Sprintf("g1: status %d as asked", code)
		if code == 8 || code == 14 { // Busy and Declined are retried elsewhere first (there is no elsewhere)
			want = ""
		}
		if r.Code == "OK" || r.Code == "Unknown" && code != 2 || want != "" && r.Message != want {
			t.Errorf("status %d came back as %s %q", code, r.Code, r.Message)
		}
	}

	// TChannel callers → the stock gRPC server: the SDK, meshctl with the .proto, tchannel-go.
	sdk := dial(t, a.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out wrapperspb.StringValue
	if _, err := sdk.CallProto(ctx, "words", "test.Words::Echo", nil, wrapperspb.String("sdk"), &out); err != nil || out.GetValue() != "g1:SDK" {
		t.Fatalf("SDK → words: %q, %v", out.GetValue(), err)
	}
	stdout, stderr, code := meshctl(t, "call", "words", "test.Words::Echo", `{"value": "cli"}`, "--proto", "../internal/grpcpeer/words.proto", "--via", a.addr)
	if code != 0 || !strings.Contains(stdout, `"g1:CLI"`) {
		t.Fatalf("meshctl --proto → words: %q %q exit %d", stdout, stderr, code)
	}
	// meshctl bench drives the same method over gRPC and over TChannel.
	for _, how := range [][]string{{"--grpc"}, {}} {
		args := append([]string{"bench", "words", "test.Words::Echo", `{"value": "b"}`, "--proto", "../internal/grpcpeer/words.proto",
			"--via", a.addr, "-n", "200", "-c", "8", "--warmup", "0s", "-o", "json"}, how...)
		stdout, stderr, code := meshctl(t, args...)
		var res struct{ Calls, Errors int }
		if code != 0 || json.Unmarshal([]byte(stdout), &res) != nil || res.Calls != 200 || res.Errors != 0 {
			t.Fatalf("meshctl bench %v: %q %q exit %d", how, stdout, stderr, code)
		}
	}
	ch, err := tchannel.NewChannel("tgo-caller", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	call, err := ch.BeginCall(ctx, a.addr, "words", "test.Words::Echo", &tchannel.CallOptions{Format: "proto"})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := proto.Marshal(wrapperspb.String("tgo"))
	if err := tchannel.NewArgWriter(call.Arg2Writer()).Write([]byte{0, 0}); err != nil {
		t.Fatal(err)
	}
	if err := tchannel.NewArgWriter(call.Arg3Writer()).Write(req); err != nil {
		t.Fatal(err)
	}
	var arg2, arg3 []byte
	if err := tchannel.NewArgReader(call.Response().Arg2Reader()).Read(&arg2); err != nil {
		t.Fatal(err)
	}
	if err := tchannel.NewArgReader(call.Response().Arg3Reader()).Read(&arg3); err != nil {
		t.Fatal(err)
	}
	var tgoOut wrapperspb.StringValue
	if err := proto.Unmarshal(arg3, &tgoOut); err != nil || tgoOut.GetValue() != "g1:TGO" {
		t.Fatalf("tchannel-go → words: %q, %v", tgoOut.GetValue(), err)
	}

	// grpcurl, from the .proto, as a user types it.
	grpcurl := toolPath(t, "grpcurl")
	cmd := exec.Command(grpcurl, "-plaintext", "-import-path", "../internal/grpcpeer", "-proto", "words.proto",
		"-H", "rpc-service: words", "-d", `{"value": "curl"}`, a.addr, "test.Words/Echo")
	got, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(got), `"value": "g1:CURL"`) {
		t.Fatalf("grpcurl: %v\n%s", err, got)
	}
	cmd = exec.Command(grpcurl, "-plaintext", "-import-path", "../internal/grpcpeer", "-proto", "words.proto",
		"-H", "rpc-service: words", "-d", `{"value": "code:5"}`, a.addr, "test.Words/Echo")
	if got, err = cmd.CombinedOutput(); err == nil || !strings.Contains(string(got), "NotFound") || !strings.Contains(string(got), "g1: status 5 as asked") {
		t.Fatalf("grpcurl, a NotFound: %v\n%s", err, got)
	}

	// The health check fails: the instance leaves Consul's passing set and
	// calls find no instance; it passes again: back.
	g1.cmd.Process.Signal(syscall.SIGUSR1)
	testkit.WaitFor(t, 15*time.Second, "words withdrawn", func() bool {
		return len(passing(t, capi, "words")) == 0 && grpcCall(t, a.addr, "x", "rpc-service=words").Code == "Unavailable"
	})
	g1.cmd.Process.Signal(syscall.SIGUSR2)
	testkit.WaitFor(t, 15*time.Second, "words back", func() bool {
		return len(passing(t, capi, "words")) == 1 && grpcCall(t, a.addr, "x", "rpc-service=words").Code == "OK"
	})
}

// toolPath builds (once) and returns one of scripts/tool.sh's tools.
func toolPath(t *testing.T, name string) string {
	t.Helper()
	out, err := exec.Command("../scripts/tool.sh", name).Output()
	if err != nil {
		t.Fatalf("scripts/tool.sh %s: %v", name, err)
	}
	return strings.TrimSpace(string(out))
}

// A retry moves a gRPC call off a Busy instance (ResourceExhausted) to
// another, and an intention denies a gRPC caller by its proven identity
// (rpc-caller, proven by its Unix user); one meshd, two gRPC servers of one
// service.
func TestGRPCRetryAndIntention(t *testing.T) {
	_, g1 := grpcServer(t, "127.0.0.1", "g1")
	_, g2 := grpcServer(t, "127.0.0.1", "g2")
	cfg := filepath.Join(t.TempDir(), "meshd.yaml")
	os.WriteFile(cfg, []byte("intentions:\n  - {source: bad, destination: words, action: deny}\n"), 0o644)
	h := startHost(t, "127.0.0.1", "off", "--config", cfg, "--grpc-servers", "words="+g1+",words="+g2, "--grpc-check-every", "200ms")
	testkit.WaitFor(t, 10*time.Second, "both gRPC servers in", func() bool {
		seen := map[string]bool{}
		for range 20 {
			seen[grpcCall(t, h.addr, "x", "rpc-service=words", "rpc-caller=good").Value] = true
		}
		return seen["g1:X"] && seen["g2:X"]
	})
	for i := range 20 {
		if r := grpcCall(t, h.addr, "busy-if:g1", "rpc-service=words", "rpc-caller=good"); r.Code != "OK" || r.Value != "g2:BUSY-IF:G1" {
			t.Fatalf("call %d, g1 busy: %+v", i, r)
		}
	}
	// With intentions written, an anonymous caller is denied unless one names it (Consul's rule).
	if r := grpcCall(t, h.addr, "x", "rpc-service=words"); r.Code != "InvalidArgument" || !strings.Contains(r.Message, "anonymous") {
		t.Fatalf("an anonymous caller: %+v", r)
	}
	if r := grpcCall(t, h.addr, "x", "rpc-service=words", "rpc-caller=bad"); r.Code != "InvalidArgument" || !strings.Contains(r.Message, "denied") {
		t.Fatalf("caller bad: %+v", r)
	}
}

// One trace spans gRPC → TChannel → gRPC in a real Jaeger: a stock gRPC
// client sends a W3C traceparent (a 128-bit trace id) to meshd A, which calls an SDK service
// (front) at A, which calls a stock gRPC server at host B through both
// meshds; every meshd and SDK span is in the client's trace, hung under the
// client's span, and the gRPC server is sent the same trace id.
func TestGRPCTraceAcrossProtocols(t *testing.T) {
	startJaeger(t)
	agent := testconsul.Start(t)
	_, g1Addr := grpcServer(t, "127.0.0.2", "g1")
	z := []string{"--zipkin", zipkinURL}
	a := startHost(t, "127.0.0.1", agent.HTTPAddr, z...)
	b := startHost(t, "127.0.0.2", agent.HTTPAddr, append(z, "--grpc-servers", "words="+g1Addr, "--grpc-check-every", "200ms")...)
	out, err := client.Dial(context.Background(), a.addr, client.Options{ServiceName: "front", Zipkin: zipkinURL, Logger: testkit.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	front := client.NewServer(client.Options{ServiceName: "front", Zipkin: zipkinURL, Logger: testkit.Quiet})
	front.Register("front", "test.Words::Echo", client.Proto(func(ctx context.Context, h map[string]string, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		var res wrapperspb.StringValue
		_, err := out.CallProto(ctx, "words", "test.Words::Echo", nil, in, &res)
		return &res, err
	}))
	if err := front.Advertise(context.Background(), a.addr); err != nil {
		t.Fatal(err)
	}
	defer front.Shutdown(context.Background())
	testkit.WaitFor(t, 15*time.Second, "front and words seen from A", func() bool { return seesServices(t, a, "front", "words") && seesServices(t, b, "front") })

	const traceID, clientSpan = "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174"
	r := grpcCall(t, a.addr, "who", "rpc-service=front", "traceparent=00-"+traceID+"-"+clientSpan+"-01")
	var who map[string]any
	if r.Code != "OK" || json.Unmarshal([]byte(r.Value), &who) != nil {
		t.Fatalf("gRPC → front → words: %+v", r)
	}
	// The 128-bit id crosses TChannel whole: its low half in the frame's
	// tracing field, its high half in a transport header.
	if tp, _ := who["traceparent"].(string); !strings.HasPrefix(tp, "00-"+traceID+"-") || !strings.HasSuffix(tp, "-01") {
		t.Fatalf("the gRPC server got traceparent %q, want trace id %s, sampled", tp, traceID)
	}
	var spans []jaegerSpan
	var svc map[string]string
	testkit.WaitFor(t, 15*time.Second, "the spans in jaeger", func() bool {
		spans, svc = fetchTrace(t, traceID)
		n := map[string]int{}
		for _, s := range spans {
			n[svc[s.SpanID]]++
		}
		return n["meshd"] >= 3 && n["front"] >= 2
	})
	var roots int
	for _, s := range spans {
		if p := s.parent(); p == "" || p == clientSpan {
			roots++
			if p != clientSpan {
				t.Errorf("span %s/%s is a root, not under the gRPC client's span %s", svc[s.SpanID], s.OperationName, clientSpan)
			}
		}
	}
	if roots != 1 {
		t.Fatalf("%d spans under the gRPC client's span, want the first meshd's alone", roots)
	}
	// None went to a 64-bit trace of the low half (what a hop that dropped
	// the high half would record).
	if lost, _ := fetchTrace(t, "0000000000000000"+traceID[16:]); len(lost) > 0 {
		t.Fatalf("%d spans in trace …%s without the high half", len(lost), traceID[16:])
	}
}

// Hostile HTTP/2 peers against a meshd process, as TestHostilePeers does
// for TChannel: benign gRPC callers (to a stock gRPC server in the config)
// and TChannel callers (to echo) see no failure, meshd's memory stays under
// hostileBound and its descriptors come back.
func TestGRPCHostilePeers(t *testing.T) {
	_, g1 := grpcServer(t, "127.0.0.1", "g1")
	h := startHost(t, "127.0.0.1", "off", "--handshake-timeout", "1s", "--grpc-servers", "words="+g1, "--grpc-check-every", "200ms",
		"--grpc-max-message-bytes", "65536", "--log-level", "info")
	start(t, "echo", "--via", h.addr)
	sdk := benignClient(t, h)
	cc, err := grpc.NewClient("passthrough:///"+h.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	benignGRPC := func(ctx context.Context) error {
		out := new(wrapperspb.StringValue)
		err := cc.Invoke(metadata.AppendToOutgoingContext(ctx, "rpc-service", "words"), "/test.Words/Echo", wrapperspb.String("benign"), out)
		if err == nil && out.GetValue() != "g1:BENIGN" {
			err = fmt.Errorf("answered %q", out.GetValue())
		}
		return err
	}
	testkit.WaitFor(t, 10*time.Second, "words answering", func() bool { return benignGRPC(context.Background()) == nil })
	benign := func() func() (int64, int64, error) {
		tc, grpcLoad := benignLoad(sdk), testkit.Load(4, func(ctx context.Context) error {
			err := benignGRPC(ctx)
			time.Sleep(time.Millisecond)
			return err
		})
		return func() (int64, int64, error) {
			c1, f1, e1 := tc()
			c2, f2, e2 := grpcLoad()
			return c1 + c2, f1 + f2, cmp.Or(e1, e2)
		}
	}
	streams := func(n int, perStream func(p *testkit.H2Peer, id uint32) error) func(t *testing.T) string {
		return func(t *testing.T) string {
			sent := 0
			for range 3 {
				p := testkit.DialH2(t, h.addr)
				for id := uint32(1); id < uint32(2*n); id += 2 {
					if perStream(p, id) != nil {
						break
					}
					sent++
				}
				time.Sleep(time.Second)
				p.Close()
			}
			return fmt.Sprintf("%d streams on 3 connections", sent)
		}
	}
	block := testkit.GRPCHeaders()
	underAttack(t, h, benign, []attack{
		{"garbage after the preface", func(t *testing.T) string {
			for range 200 {
				p := testkit.DialH2(t, h.addr)
				p.Conn.Write(bytes.Repeat([]byte{0xff}, 4096))
				p.Close()
			}
			return "200 connections"
		}},
		{"streams that never send their message", streams(5000, func(p *testkit.H2Peer, id uint32) error {
			return p.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndHeaders: true})
		})},
		{"streams opened and reset at once", streams(20000, func(p *testkit.H2Peer, id uint32) error {
			if err := p.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndHeaders: true}); err != nil {
				return err
			}
			return p.WriteRSTStream(id, http2.ErrCodeCancel)
		})},
		{"metadata past the header list limit", streams(200, func(p *testkit.H2Peer, id uint32) error {
			return p.WriteHeaders(http2.HeadersFrameParam{StreamID: id, EndHeaders: true,
				BlockFragment: testkit.GRPCHeaders("x-big", strings.Repeat("a", 15000), "x-big2", strings.Repeat("b", 15000))})
		})},
		{"messages past the size limit", streams(50, func(p *testkit.H2Peer, id uint32) error {
			big := testkit.GRPCMessage(bytes.Repeat([]byte{1}, 1<<20))
			if err := p.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndHeaders: true}); err != nil {
				return err
			}
			for off := 0; off < len(big); off += 16 << 10 {
				if err := p.WriteData(id, false, big[off:min(off+16<<10, len(big))]); err != nil {
					return err
				}
			}
			return nil
		})},
		{"2,000 connections that never send a frame", func(t *testing.T) string {
			var conns []net.Conn
			for range 2000 {
				nc, err := net.Dial("tcp", h.addr)
				if err != nil {
					break
				}
				io.WriteString(nc, http2.ClientPreface) // and nothing more
				conns = append(conns, nc)
			}
			time.Sleep(1500 * time.Millisecond) // past the handshake timeout
			for _, nc := range conns {
				nc.Close()
			}
			return fmt.Sprintf("%d connections", len(conns))
		}},
	})
	if v := testkit.Metric(t, h.admin, `mesh_grpc_refused_total{reason="message_size"}`); v == "" || v == "0" {
		t.Errorf("no message refused for its size (%q)", v)
	}
}
